"""The Ray tier: the gateway with `--provisioner ray` on a real Ray cluster on this machine.

One cluster for the tier (`ray_cluster`, session-wide, one xdist group): a head with no
room for instances and two workers with two CPUs each, one of them advertising a GPU, all
on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray off the machine's interface
address). The test process is Ray's driver, and its gateways run on threads of it. Where
Ray is not installed the tier is skipped with one line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cluster.add_node(num_cpus=2, resources={"cpu_worker": 1})
    cluster.add_node(num_cpus=2, num_gpus=1, resources={"gpu_worker": 1})
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
