"""Instances as local processes: failures, timeouts, blue/green updates, logs."""

from __future__ import annotations

import logging
import os
import threading

import pytest
from botocore.exceptions import WaiterError

from streamhost import cli
from streamhost.engine import vllm_installed
from streamhost.gateway.provisioner import gpu_available, is_accelerated, read_instance_logs
from tests.harness import (
    LMI_IMAGE,
    ROLE,
    TGI_IMAGE,
    VLLM_IMAGE,
    GatewayThread,
    assert_no_model_servers,
    create_synthetic_endpoint,
    delete_endpoint,
    model_servers,
    payload_bytes,
    targz,
    tgi_body,
    wait_in_service,
)


def failed(sm, name: str) -> str:
    waiter = sm.get_waiter("endpoint_in_service")
    with pytest.raises(WaiterError):
        waiter.wait(EndpointName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
    described = sm.describe_endpoint(EndpointName=name)
    assert described["EndpointStatus"] == "Failed"
    return described["FailureReason"]


def test_an_instance_that_exits_fails_the_endpoint_with_its_log_tail(gateway):
    sm = gateway.sm()
    create_synthetic_endpoint(
        sm,
        "broken",
        environment={"HF_MODEL_ID": "synthetic:5", "HF_MODEL_QUANTIZE": "bogus"},
        wait=False,
    )
    reason = failed(sm, "broken")
    assert "exited with status 2 before passing its health check" in reason
    assert "HF_MODEL_QUANTIZE='bogus' is not a TGI quantization method" in reason
    assert not model_servers()
    sm.delete_endpoint(EndpointName="broken")


@pytest.mark.skipif(vllm_installed(), reason="vLLM is installed in this Python")
@pytest.mark.parametrize(
    ("image", "environment"),
    [
        (LMI_IMAGE, {"OPTION_MODEL_ID": "tiny", "OPTION_ROLLING_BATCH": "vllm"}),
        (VLLM_IMAGE, {"SM_VLLM_MODEL": "tiny"}),
    ],
    ids=["lmi-rolling-batch-vllm", "vllm-image"],
)
def test_vllm_asked_for_without_vllm_fails_the_endpoint_with_the_reason(
    gateway, image, environment
):
    sm = gateway.sm()
    create_synthetic_endpoint(sm, "wants-vllm", image=image, environment=environment, wait=False)
    reason = failed(sm, "wants-vllm")
    assert "exited with status 2 before passing its health check" in reason
    assert "the vllm engine was asked for but vLLM is not installed" in reason
    assert not model_servers()
    sm.delete_endpoint(EndpointName="wants-vllm")


def test_an_instance_that_never_gets_healthy_fails_after_the_startup_timeout(tmp_path):
    archive = tmp_path / "slow.tar.gz"
    archive.write_bytes(
        targz(
            {
                "serving.properties": b"engine=Python\noption.entryPoint=model.py\n",
                "model.py": b"import time\ntime.sleep(60)\n\ndef handle(inputs):\n    return None\n",
            }
        )
    )
    live = GatewayThread(tmp_path / "state", startup_timeout=2.0).start()
    try:
        sm = live.sm()
        sm.create_model(
            ModelName="slow",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": LMI_IMAGE, "ModelDataUrl": str(archive)},
        )
        sm.create_endpoint_config(
            EndpointConfigName="slow",
            ProductionVariants=[
                {
                    "VariantName": "v",
                    "ModelName": "slow",
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                }
            ],
        )
        sm.create_endpoint(EndpointName="slow", EndpointConfigName="slow")
        reason = failed(sm, "slow")
        assert "did not pass its /ping health check within " in reason
        assert "ContainerStartupHealthCheckTimeoutInSeconds=2" in reason
        assert_no_model_servers()
        sm.delete_endpoint(EndpointName="slow")
    finally:
        live.stop()
    assert_no_model_servers()


def test_an_unsafe_archive_fails_the_endpoint_before_any_process_starts(gateway, tmp_path):
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(buffer.getvalue())
    sm = gateway.sm()
    sm.create_model(
        ModelName="evil",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": LMI_IMAGE, "ModelDataUrl": archive.as_uri()},
    )
    sm.create_endpoint_config(
        EndpointConfigName="evil",
        ProductionVariants=[
            {
                "VariantName": "v",
                "ModelName": "evil",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.create_endpoint(EndpointName="evil", EndpointConfigName="evil")
    reason = failed(sm, "evil")
    assert "is unsafe: member '../../escape.txt' has a '..' path component" in reason
    assert not (tmp_path / "escape.txt").exists()
    sm.delete_endpoint(EndpointName="evil")


def test_update_endpoint_is_blue_green_and_drains_the_old_fleet(gateway):
    sm, smr = gateway.sm(), gateway.smr()
    create_synthetic_endpoint(sm, "bg", count=1, delay_ms=5)
    (old,) = gateway.app.store.list_instances("bg")
    # A long stream on the old fleet, running while the update happens.
    resp = smr.invoke_endpoint_with_response_stream(EndpointName="bg", Body=tgi_body(tokens=400))
    result: dict[str, bytes] = {}
    reader = threading.Thread(target=lambda: result.setdefault("body", payload_bytes(resp)))
    reader.start()

    sm.create_model(
        ModelName="bg-model-2",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": TGI_IMAGE, "Environment": {"HF_MODEL_ID": "synthetic:1"}},
    )
    sm.create_endpoint_config(
        EndpointConfigName="bg-config-2",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "bg-model-2",
                "InstanceType": "ml.c5.large",
                "InitialInstanceCount": 2,
            }
        ],
    )
    sm.update_endpoint(EndpointName="bg", EndpointConfigName="bg-config-2")
    wait_in_service(sm, "bg")
    reader.join(30)
    assert result["body"].count(b"data:") == 400  # the in-flight stream finished on old
    new = gateway.app.store.list_instances("bg")
    assert len(new) == 2 and old.pid not in {r.pid for r in new}
    assert old.pid not in {p.pid for p in model_servers()}
    described = sm.describe_endpoint(EndpointName="bg")
    assert described["EndpointConfigName"] == "bg-config-2"
    assert described["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    assert payload_bytes(
        smr.invoke_endpoint_with_response_stream(EndpointName="bg", Body=tgi_body())
    )
    delete_endpoint(sm, "bg")


def test_a_failed_update_leaves_the_old_fleet_serving(gateway):
    sm, smr = gateway.sm(), gateway.smr()
    create_synthetic_endpoint(sm, "stay", count=1)
    (old,) = gateway.app.store.list_instances("stay")
    sm.create_model(
        ModelName="stay-bad",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": TGI_IMAGE,
            "Environment": {"HF_MODEL_ID": "synthetic:1", "MAX_TOTAL_TOKENS": "not-a-number"},
        },
    )
    sm.create_endpoint_config(
        EndpointConfigName="stay-bad",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "stay-bad",
                "InstanceType": "ml.c5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.update_endpoint(EndpointName="stay", EndpointConfigName="stay-bad")
    wait_in_service(sm, "stay")
    described = sm.describe_endpoint(EndpointName="stay")
    assert "MAX_TOTAL_TOKENS" in described["FailureReason"]
    assert described["EndpointConfigName"] == "stay-config"
    assert [r.pid for r in gateway.app.store.list_instances("stay")] == [old.pid]
    assert payload_bytes(
        smr.invoke_endpoint_with_response_stream(EndpointName="stay", Body=tgi_body())
    )
    delete_endpoint(sm, "stay")


def test_an_instance_has_a_group_of_its_own_in_the_gateways_session(gateway):
    # Its group is what the gateway signals to stop it; the session is the gateway's, so
    # that a busy instance does not starve the gateway's relay (`processes.own_group`).
    sm = gateway.sm()
    create_synthetic_endpoint(sm, "grouped")
    (record,) = gateway.app.store.list_instances("grouped")
    assert os.getpgid(record.pid) == record.pid
    assert os.getsid(record.pid) == os.getsid(0)
    delete_endpoint(sm, "grouped")


def test_gpu_instance_types_run_on_cpu_with_a_warning(gateway, caplog):
    if gpu_available():
        pytest.skip("this machine has a GPU")
    caplog.set_level(logging.WARNING, logger="streamhost.gateway.provisioner")
    sm = gateway.sm()
    variants = [
        {
            "VariantName": "AllTraffic",
            "ModelName": "gpu-model",
            "InstanceType": "ml.p4d.24xlarge",
            "InitialInstanceCount": 1,
        }
    ]
    create_synthetic_endpoint(sm, "gpu", variants=variants)
    assert "asks for ml.p4d.24xlarge but this machine has no GPU: running on CPU" in caplog.text
    delete_endpoint(sm, "gpu")


def test_accelerated_instance_families_are_recognised():
    assert all(
        is_accelerated(t)
        for t in (
            "ml.g5.2xlarge",
            "ml.p5.48xlarge",
            "ml.inf2.xlarge",
            "ml.trn1.2xlarge",
            "ml.g4dn.xlarge",
        )
    )
    assert not any(is_accelerated(t) for t in ("ml.m5.large", "ml.c7g.large", "ml.t2.medium"))


def test_instance_logs_are_kept_and_printed_by_streamhost_logs(gateway, capsys):
    sm = gateway.sm()
    create_synthetic_endpoint(sm, "Chatty", count=2)
    logs = read_instance_logs(gateway.settings.state_dir, "chatty")
    assert len(logs) == 2
    assert all("serving synthetic:5 (tgi API)" in text for _, text in logs)
    delete_endpoint(sm, "Chatty")
    # Kept after the endpoint is gone, like CloudWatch logs.
    assert cli.main(["logs", "Chatty", "--state-dir", str(gateway.settings.state_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("==> instance alltraffic-") == 2
    assert "streamhost: stopped instance" in out
    assert not (gateway.settings.state_dir / "endpoints" / "chatty").exists()
    assert cli.main(["logs", "nope", "--state-dir", str(gateway.settings.state_dir)]) == 1
    assert "no instance logs for endpoint 'nope'" in capsys.readouterr().err


def test_every_instance_type_of_the_service_model_can_be_planned(tmp_path, caplog):
    from streamhost.gateway.provisioner import ProvisionerSettings, plan_variants
    from streamhost.gateway.validation import sagemaker_model

    enum = sagemaker_model().shape_for("ProductionVariantInstanceType").enum
    settings = ProvisionerSettings(state_dir=tmp_path, gpu=False)
    model = {"ModelName": "m", "PrimaryContainer": {"Image": TGI_IMAGE}}
    for instance_type in enum:
        config = {
            "ProductionVariants": [
                {"VariantName": "v", "ModelName": "m", "InstanceType": instance_type}
            ]
        }
        (plan,) = plan_variants(config, {"m": model}, settings).values()
        assert plan.instance_type == instance_type and plan.api == "tgi"
    warned = [r for r in caplog.records if "no GPU: running on CPU" in r.getMessage()]
    assert len(warned) == sum(1 for t in enum if is_accelerated(t))


def test_the_fleet_manager_is_the_gateways_deployer_with_a_local_launcher(tmp_path):
    from streamhost.gateway.launcher import InstanceLauncher, LocalProcessLauncher
    from streamhost.gateway.lifecycle import GatewayDeployer
    from streamhost.gateway.provisioner import FleetManager, ProvisionerSettings
    from streamhost.gateway.router import Router

    manager = FleetManager(ProvisionerSettings(state_dir=tmp_path), store=None, router=Router())
    assert isinstance(manager, GatewayDeployer)
    assert isinstance(manager.launcher, LocalProcessLauncher)
    assert isinstance(manager.launcher, InstanceLauncher)


def test_every_instance_type_has_ray_resources():
    from streamhost.gateway.ray_launcher import instance_resources
    from streamhost.gateway.validation import sagemaker_model

    for instance_type in sagemaker_model().shape_for("ProductionVariantInstanceType").enum:
        options = instance_resources(instance_type)
        assert options["num_cpus"] >= 1 and options["memory"] > 0, instance_type
    assert instance_resources("ml.m5.xlarge") == {"num_cpus": 4, "memory": 16 * 2**30}
    assert instance_resources("ml.c5.2xlarge", 0.5) == {"num_cpus": 4, "memory": 8 * 2**30}
    gpus = {t: instance_resources(t).get("num_gpus") for t in ("ml.g5.xlarge", "ml.g5.12xlarge")}
    assert gpus == {"ml.g5.xlarge": 1, "ml.g5.12xlarge": 4}
    assert instance_resources("ml.p4d.24xlarge")["num_gpus"] == 8
    assert instance_resources("ml.inf2.xlarge")["resources"] == {"neuron_cores": 1}
