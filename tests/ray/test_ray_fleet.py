"""Endpoints whose instances are actors on a Ray cluster, driven by unchanged boto3 code."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import EventStreamError, WaiterError

from streamhost import cli
from streamhost.gateway.provisioner import read_instance_logs
from tests.harness import (
    GatewayThread,
    assert_no_model_servers,
    create_synthetic_endpoint,
    delete_endpoint,
    model_servers,
    payload_bytes,
    targz,
    tgi_body,
    wait_for,
    wait_in_service,
)
from tests.ray.tier import TIER

pytestmark = TIER
# How long an instance may wait for room: a placed actor's worker process must start within
# it too, which took over 15 s on this busy two-core machine.
PLACEMENT_SECONDS = 40.0


def ray_gateway(state, cluster, **overrides) -> GatewayThread:
    return GatewayThread(
        state,
        provisioner="ray",
        ray_address=cluster.address,
        ray_resource_scale=0.25,  # an ml.m5.xlarge (4 vCPUs) asks for one CPU
        ray_placement_timeout=PLACEMENT_SECONDS,
        **overrides,
    ).start()


def actors() -> list[str]:
    """Every streamhost instance actor on the cluster (each test's gateway has its own
    state, so its own namespace)."""
    import ray

    named = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in named if a["namespace"].startswith("streamhost-"))


def stream(smr, name: str, tokens: int) -> bytes:
    resp = smr.invoke_endpoint_with_response_stream(
        EndpointName=name, Body=tgi_body("go", tokens), ContentType="application/json"
    )
    return payload_bytes(resp)


def node_log_folders() -> set[Path]:
    """The actors' own copies of their model servers' logs, on the node (here, this one)."""
    return set(Path(tempfile.gettempdir()).glob("streamhost-instance-*"))


def test_deploy_stream_and_delete_on_the_cluster(ray_cluster, tmp_path, capsys):
    state = tmp_path / "state"
    gateway = ray_gateway(state, ray_cluster)
    before = node_log_folders()
    try:
        sm, smr = gateway.sm(), gateway.smr()
        create_synthetic_endpoint(sm, "on-ray", count=2)
        names = actors()
        assert len(names) == 2 and all(n.startswith("on-ray/") for n in names)
        assert stream(smr, "on-ray", 40).count(b"data:") == 40
        # The model servers are the actors' children, not the gateway's.
        assert not model_servers() and len(model_servers(state)) == 2
        # Each writes its log on its node; the gateway keeps a copy in its state folder.
        # (a replaced instance on a busy machine leaves its own folder until it is stopped)
        assert len(node_log_folders() - before) >= 2
        wait_for(
            lambda: (
                sum(
                    "serving synthetic:5 (tgi API)" in text
                    for _, text in read_instance_logs(state, "on-ray")
                )
                == 2
            ),
            timeout=15,
        )
        delete_endpoint(sm, "on-ray")
        assert actors() == []
        wait_for(lambda: node_log_folders() - before == set(), timeout=30)
    finally:
        gateway.stop()
    assert_no_model_servers(state)
    assert cli.main(["logs", "on-ray", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert out.count("==> instance alltraffic-") == 2
    assert out.count("serving synthetic:5 (tgi API)") == 2
    assert out.count("streamhost: stopped instance") == 2


def test_model_files_are_shipped_through_the_object_store(ray_cluster, tmp_path, tiny_dir):
    # --ray-ship-models does for every node what a node that cannot see the gateway's state
    # folder gets: the files, written into the actor's own folder, and the model server
    # (and the environment's /opt/ml/model) pointed there.
    archive = tmp_path / "tiny.tar.gz"
    archive.write_bytes(targz({p.name: p.read_bytes() for p in tiny_dir.iterdir()}))
    state = tmp_path / "state"
    gateway = ray_gateway(state, ray_cluster, ray_ship_models=True)
    before = node_log_folders()
    try:
        sm, smr = gateway.sm(), gateway.smr()
        create_synthetic_endpoint(
            sm, "shipped", environment={"HF_MODEL_ID": "/opt/ml/model"}, model_data=archive.as_uri()
        )
        # The live instance's folder (one replaced on a busy machine left its own too).
        (folder,) = [f for f in node_log_folders() - before if model_servers(f)]
        (server,) = model_servers(folder)
        assert str(folder / "model") in server.cmdline()
        assert server.environ()["HF_MODEL_ID"] == str(folder / "model")
        assert sorted(p.name for p in (folder / "model").iterdir()) == sorted(
            p.name for p in tiny_dir.iterdir()
        )
        assert stream(smr, "shipped", 12).count(b"data:") == 12
        delete_endpoint(sm, "shipped")
        # Each stopped actor deletes its folder (a replaced one's stop may end just after).
        wait_for(lambda: node_log_folders() - before == set(), timeout=30)
    finally:
        gateway.stop()
    assert_no_model_servers(state)


def test_a_gpu_type_lands_on_the_gpu_node_and_too_many_gpus_fail_the_endpoint(
    ray_cluster, tmp_path, caplog
):
    import ray

    gateway = ray_gateway(tmp_path / "state", ray_cluster)
    try:
        sm = gateway.sm()
        variant = {
            "VariantName": "AllTraffic",
            "ModelName": "gpu-model",
            "InstanceType": "ml.g5.xlarge",
            "InitialInstanceCount": 1,
        }
        create_synthetic_endpoint(sm, "gpu", variants=[variant])
        assert ray.available_resources().get("GPU", 0) == 0  # its one GPU is taken
        # The gateway's machine has none, and that is no concern of a Ray fleet's.
        assert "has no GPU" not in caplog.text
        # Four GPUs (ml.g5.12xlarge) exist nowhere: Failed, saying so, in bounded time.
        started = time.monotonic()
        big = {**variant, "ModelName": "big-model", "InstanceType": "ml.g5.12xlarge"}
        create_synthetic_endpoint(sm, "big", variants=[big], wait=False)
        waiter = sm.get_waiter("endpoint_in_service")
        with pytest.raises(WaiterError):
            waiter.wait(EndpointName="big", WaiterConfig={"Delay": 1, "MaxAttempts": 90})
        described = sm.describe_endpoint(EndpointName="big")
        assert described["EndpointStatus"] == "Failed"
        assert "not enough capacity for the requested InstanceType" in described["FailureReason"]
        assert "4 GPU" in described["FailureReason"]
        assert time.monotonic() - started < PLACEMENT_SECONDS + 30
        sm.delete_endpoint(EndpointName="big")
        delete_endpoint(sm, "gpu")
    finally:
        gateway.stop()
    assert_no_model_servers(tmp_path / "state")


def test_a_restarted_gateway_adopts_its_actors(ray_cluster, tmp_path):
    state = tmp_path / "state"
    first = ray_gateway(state, ray_cluster, keep_instances=True)
    try:
        create_synthetic_endpoint(first.sm(), "kept", count=1)
        before = actors()
    finally:
        first.stop()
    assert actors() == before  # left running for the next gateway

    second = ray_gateway(state, ray_cluster)
    try:
        wait_in_service(second.sm(), "kept")
        assert actors() == before  # adopted, not replaced
        assert stream(second.smr(), "kept", 10).count(b"data:") == 10
        delete_endpoint(second.sm(), "kept")
    finally:
        second.stop()
    assert_no_model_servers(state)


def test_scale_out_and_in_on_the_cluster_loses_no_chunk(ray_cluster, tmp_path):
    gateway = ray_gateway(tmp_path / "state", ray_cluster)
    try:
        sm, smr = gateway.sm(), gateway.smr()
        create_synthetic_endpoint(sm, "elastic", count=1)
        entry = {"VariantName": "AllTraffic", "DesiredInstanceCount": 3}
        sm.update_endpoint_weights_and_capacities(
            EndpointName="elastic", DesiredWeightsAndCapacities=[entry]
        )
        wait_in_service(sm, "elastic")
        assert len([n for n in actors() if n.startswith("elastic/")]) == 3
        counts: list[int] = []
        runners = [
            threading.Thread(
                target=lambda: counts.append(stream(smr, "elastic", 400).count(b"data:"))
            )
            for _ in range(6)
        ]
        for runner in runners:
            runner.start()
        time.sleep(0.3)
        sm.update_endpoint_weights_and_capacities(
            EndpointName="elastic",
            DesiredWeightsAndCapacities=[{**entry, "DesiredInstanceCount": 1}],
        )
        for runner in runners:
            runner.join(60)
        assert counts == [400] * 6  # the two removed instances drained their streams
        wait_in_service(sm, "elastic")
        assert len([n for n in actors() if n.startswith("elastic/")]) == 1
        delete_endpoint(sm, "elastic")
    finally:
        gateway.stop()
    assert_no_model_servers(tmp_path / "state")


# Last in the module: it removes a node of the shared cluster.
def test_a_lost_node_ends_its_streams_and_is_replaced(ray_cluster, tmp_path):
    gateway = ray_gateway(tmp_path / "state", ray_cluster)
    ray_cluster.add_node(num_cpus=2)  # room for the replacement
    try:
        sm, smr = gateway.sm(), gateway.smr()
        variant = {
            "VariantName": "AllTraffic",
            "ModelName": "survivor-model",
            "InstanceType": "ml.m5.2xlarge",  # 8 vCPUs x 0.25: a whole node each
            "InitialInstanceCount": 2,
        }
        create_synthetic_endpoint(sm, "survivor", variants=[variant])
        # The node one instance runs on (its record says), to be lost.
        placed = gateway.app.store.list_instances("survivor")[0].detail["ray_node"]
        victim = next(node for node in ray_cluster.list_all_nodes() if node.node_id == placed)
        outcomes: list[str] = []

        def run() -> None:
            try:
                outcomes.append(str(stream(smr, "survivor", 2000).count(b"data:")))
            except EventStreamError as error:
                outcomes.append(error.response["Error"]["Code"])

        runners = [threading.Thread(target=run) for _ in range(4)]
        for runner in runners:
            runner.start()
        time.sleep(1.0)
        ray_cluster.remove_node(victim)
        for runner in runners:
            runner.join(60)
        # Streams on the lost node ended with the modelled error; the others finished.
        assert sorted(set(outcomes)) == ["2000", "ModelStreamError"], outcomes
        assert sm.describe_endpoint(EndpointName="survivor")["EndpointStatus"] == "InService"
        assert stream(smr, "survivor", 10).count(b"data:") == 10

        def whole() -> bool:
            summary = sm.describe_endpoint(EndpointName="survivor")["ProductionVariants"][0]
            return summary["CurrentInstanceCount"] == 2

        deadline = time.monotonic() + 90
        while not whole():
            assert time.monotonic() < deadline, "the lost instance was not replaced"
            time.sleep(0.5)
        assert len([n for n in actors() if n.startswith("survivor/")]) == 2
        delete_endpoint(sm, "survivor")
    finally:
        gateway.stop()


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:1", "cannot reach the Ray cluster at 127.0.0.1:1: Connection refused"),
        ("nonsense", "--ray-address 'nonsense' is not auto, host:port or ray://host:port"),
    ],
)
def test_an_unreachable_cluster_is_one_line_and_a_failed_start(tmp_path, address, message):
    # Its own process: this one is already Ray's driver for the shared cluster.
    argv = [sys.executable, "-m", "streamhost.cli", "gateway", "--provisioner", "ray"]
    argv += ["--ray-address", address, "--port", "0", "--state", str(tmp_path / "g.db")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_the_autoscaler_scales_a_variant_on_the_cluster(ray_cluster, tmp_path):
    # Registered with a minimum above its count: the scaler brings it within bounds through
    # UpdateEndpointWeightsAndCapacities, which places one more actor.
    gateway = ray_gateway(tmp_path / "state", ray_cluster, autoscaling_time_scale=0.1)
    try:
        sm, aas = gateway.sm(), gateway.autoscaling()
        create_synthetic_endpoint(sm, "scaled", count=1)
        aas.register_scalable_target(
            ServiceNamespace="sagemaker",
            ResourceId="endpoint/scaled/variant/AllTraffic",
            ScalableDimension="sagemaker:variant:DesiredInstanceCount",
            MinCapacity=2,
            MaxCapacity=2,
        )

        def settled() -> list:
            activities = aas.describe_scaling_activities(ServiceNamespace="sagemaker")
            return [a for a in activities["ScalingActivities"] if a["StatusCode"] == "Successful"]

        (activity,) = wait_for(settled, timeout=60)
        assert activity["Description"] == "Setting desired instance count to 2."
        assert len([n for n in actors() if n.startswith("scaled/")]) == 2
        variant = sm.describe_endpoint(EndpointName="scaled")["ProductionVariants"][0]
        assert variant["CurrentInstanceCount"] == variant["DesiredInstanceCount"] == 2
        delete_endpoint(sm, "scaled")
    finally:
        gateway.stop()
    assert_no_model_servers(tmp_path / "state")
