"""The blog's LMI flow through the gateway, on vLLM: its serving.properties with
`option.rolling_batch=vllm` in place of `auto`, deployed with boto3 onto an instance that
the gateway starts with vLLM's Python, streamed with the blog's own LineIterator."""

from __future__ import annotations

import json

from streamhost.gateway.provisioner import read_instance_logs
from tests import blog
from tests.harness import LMI_IMAGE, ROLE, GatewayProcess, delete_endpoint, targz, wait_in_service
from tests.vllm.tier import TIER, VLLM_ENV, VLLM_PYTHON

pytestmark = TIER


def test_blog_lmi_flow_streams_on_vllm_through_the_gateway(tmp_path, monkeypatch):
    for name, value in VLLM_ENV.items():
        monkeypatch.setenv(name, value)  # the gateway passes its environment to instances
    properties = blog.SERVING_PROPERTIES.replace(
        "option.rolling_batch=auto", "option.rolling_batch=vllm"
    )
    assert "option.rolling_batch=vllm" in properties
    archive = tmp_path / "mymodel.tar.gz"
    archive.write_bytes(targz({"mymodel/serving.properties": properties.encode()}))
    assert VLLM_PYTHON is not None
    gateway = GatewayProcess(tmp_path / "state", python=VLLM_PYTHON).start()
    try:
        sm, smr = gateway.sm(), gateway.smr()
        sm.create_model(
            ModelName="lmi-vllm",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": LMI_IMAGE, "ModelDataUrl": str(archive)},
        )
        sm.create_endpoint_config(
            EndpointConfigName="lmi-vllm",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "lmi-vllm",
                    "InstanceType": "ml.m5.2xlarge",
                    "InitialInstanceCount": 1,
                    "ContainerStartupHealthCheckTimeoutInSeconds": 900,
                }
            ],
        )
        sm.create_endpoint(EndpointName="lmi-vllm", EndpointConfigName="lmi-vllm")
        wait_in_service(sm, "lmi-vllm")

        body = {"inputs": "what is SageMaker?", "parameters": {"max_new_tokens": 24}}
        resp = smr.invoke_endpoint_with_response_stream(
            EndpointName="lmi-vllm", Body=json.dumps(body), ContentType="application/json"
        )
        assert resp["ContentType"] == "application/jsonlines"
        output, lines = "", 0
        for line in blog.LineIterator(resp["Body"]):
            output += json.loads(line).get("outputs")[0]
            lines += 1
        assert lines == 24 and output
        logs = "".join(text for _, text in read_instance_logs(tmp_path / "state", "lmi-vllm"))
        assert "starting vLLM" in logs  # vLLM answered, not our engine
        delete_endpoint(sm, "lmi-vllm")
    finally:
        leftovers = gateway.stop()
    assert not leftovers
