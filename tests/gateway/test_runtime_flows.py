"""The SageMaker streaming blog's two flows, end to end: boto3 → gateway → model server.

Each deploys like the blog's notebooks (model data in a .tar.gz, an LMI or TGI image URI,
ml.g5.2xlarge), waits with boto3's own waiter, streams with the blog's LineIterator loop,
and deletes the endpoint, leaving no process behind.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from streamhost.client import LineIterator
from tests import blog
from tests.harness import (
    LMI_IMAGE,
    ROLE,
    TGI_IMAGE,
    delete_endpoint,
    payload_bytes,
    targz,
    wait_in_service,
)

# Deploys of the tiny model (a model-server process with torch each).
pytestmark = pytest.mark.slow


def deploy(sm, name: str, container: dict, health_timeout: int = 900) -> None:
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer=container)
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InstanceType": "ml.g5.2xlarge",
                "InitialInstanceCount": 1,
                "ContainerStartupHealthCheckTimeoutInSeconds": health_timeout,
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    wait_in_service(sm, name)


def test_lmi_blog_flow_streams_outputs_lines_through_line_iterator(gateway, tmp_path):
    # `mkdir mymodel; mv serving.properties mymodel/; tar czvf mymodel.tar.gz mymodel/`
    archive = tmp_path / "mymodel.tar.gz"
    archive.write_bytes(targz({"mymodel/serving.properties": blog.SERVING_PROPERTIES.encode()}))
    sm, smr = gateway.sm(), gateway.smr()
    deploy(sm, "falcon-7b-lmi", {"Image": LMI_IMAGE, "ModelDataUrl": str(archive)})

    body = {"inputs": "what is SageMaker?", "parameters": {"max_new_tokens": 24}}
    resp = smr.invoke_endpoint_with_response_stream(
        EndpointName="falcon-7b-lmi", Body=json.dumps(body), ContentType="application/json"
    )
    assert resp["ContentType"] == "application/jsonlines"
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    # The blog's own loop, its own LineIterator.
    output = ""
    lines = 0
    for line in blog.LineIterator(resp["Body"]):
        resp_line = json.loads(line)
        output += resp_line.get("outputs")[0]
        lines += 1
    assert lines == 24  # one jsonlines record per token, each its own PayloadPart
    assert output

    delete_endpoint(sm, "falcon-7b-lmi")


def test_tgi_blog_flow_streams_sse_tokens(gateway):
    sm, smr = gateway.sm(), gateway.smr()
    env = {
        "HF_MODEL_ID": "tiny",
        "SM_NUM_GPUS": "1",
        "MAX_INPUT_LENGTH": "1900",
        "MAX_TOTAL_TOKENS": "2048",
    }
    deploy(sm, "falcon-7b-tgi", {"Image": TGI_IMAGE, "Environment": env}, health_timeout=300)

    body = {
        "inputs": "what is SageMaker?",
        "parameters": {"max_new_tokens": 20, "return_full_text": False},
        "stream": True,
    }
    resp = smr.invoke_endpoint_with_response_stream(
        EndpointName="falcon-7b-tgi", Body=json.dumps(body), ContentType="application/json"
    )
    assert resp["ContentType"].startswith("text/event-stream")
    tokens = []
    for line in LineIterator(resp["Body"]):
        if line != b"" and line.startswith(b"data:"):
            tokens.append(json.loads(line[5:].decode())["token"]["text"])
    assert len(tokens) == 20

    delete_endpoint(sm, "falcon-7b-tgi")


MODEL_PY = b"""
from djl_python import Input, Output

PNG = bytes(range(256)) * 40  # binary: every byte value, newlines included

def handle(inputs: Input):
    if inputs.is_empty():
        return None
    size = int(inputs.get_as_json().get("chunk", 1000))
    def chunks():
        for i in range(0, len(PNG), size):
            yield PNG[i : i + size]
    out = Output()
    out.add_property("content-type", "image/png")
    # Echo what the gateway forwarded: custom attributes and the inference id.
    seen = (inputs.get_property("x-amzn-sagemaker-custom-attributes") or "",
            inputs.get_property("x-amzn-sagemaker-inference-id") or "")
    out.add_property("X-Amzn-SageMaker-Custom-Attributes", "seen=%s|%s" % seen)
    return out.add_stream_content(chunks(), output_formatter=None)
"""


def test_custom_lmi_handler_streams_binary_bytes_byte_for_byte(gateway, tmp_path):
    archive = tmp_path / "custom.tar.gz"
    archive.write_bytes(
        targz(
            {
                "serving.properties": b"engine=Python\noption.entryPoint=model.py\n",
                "model.py": MODEL_PY,
            }
        )
    )
    sm, smr = gateway.sm(), gateway.smr()
    deploy(sm, "images", {"Image": LMI_IMAGE, "ModelDataUrl": archive.as_uri()})

    resp = smr.invoke_endpoint_with_response_stream(
        EndpointName="images",
        Body=json.dumps({"chunk": 777}),
        ContentType="application/json",
        CustomAttributes="trace=abc",
        InferenceId="req-42",
    )
    assert resp["ContentType"] == "image/png"
    assert resp["CustomAttributes"] == "seen=trace=abc|req-42"
    events = list(resp["Body"])
    data = b"".join(e["PayloadPart"]["Bytes"] for e in events)
    expected = bytes(range(256)) * 40
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(expected).hexdigest()
    assert len(events) > 1  # streamed, not buffered into one part

    again = smr.invoke_endpoint_with_response_stream(EndpointName="images", Body=b"{}")
    assert payload_bytes(again) == expected
    delete_endpoint(sm, "images")
