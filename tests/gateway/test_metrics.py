"""SageMaker's endpoint metrics: measured by the gateway, read with boto3's CloudWatch
client and from GET /metrics."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import httpx
import pytest
from botocore.exceptions import ClientError

from streamhost.gateway.metrics import Metrics
from streamhost.gateway.store import Store
from tests.harness import (
    create_synthetic_endpoint,
    payload_bytes,
    running_gateway,
    signed_headers,
    tgi_body,
    wait_for,
)


def dimensions(endpoint: str, variant: str = "AllTraffic") -> list[dict[str, str]]:
    return [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]


def window() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.timezone.utc)
    return now - dt.timedelta(minutes=10), now + dt.timedelta(minutes=1)


def statistics(cw, endpoint: str, metric: str, *stats: str, period: int = 60) -> dict[str, float]:
    """The statistics over the last minutes, summed over the periods."""
    start, end = window()
    points = cw.get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName=metric,
        Dimensions=dimensions(endpoint),
        StartTime=start,
        EndTime=end,
        Period=period,
        Statistics=list(stats) or ["Sum"],
    )["Datapoints"]
    totals: dict[str, float] = {}
    for point in points:
        for name in stats or ("Sum",):
            if name == "Maximum":
                totals[name] = max(totals.get(name, 0.0), point[name])
            else:
                totals[name] = totals.get(name, 0.0) + point[name]
    return totals


@pytest.fixture(scope="module")
def measured(module_gateway):
    """An endpoint with 2 instances that took 6 streams, 3 invocations and 2 model errors."""
    sm, smr = module_gateway.sm(), module_gateway.smr()
    create_synthetic_endpoint(sm, "Measured", count=2)
    # What the client measured of each stream: its first PayloadPart and its end.
    module_gateway.client_seconds = []
    for _ in range(6):
        started = time.monotonic()
        resp = smr.invoke_endpoint_with_response_stream(
            EndpointName="Measured", Body=tgi_body("go", 8), ContentType="application/json"
        )
        parts = []
        for event in resp["Body"]:
            if not parts:
                first = time.monotonic() - started
            parts.append(event["PayloadPart"]["Bytes"])
        module_gateway.client_seconds.append((first, time.monotonic() - started))
        assert b"".join(parts).count(b"data:") == 8
    # And of each invocation: its first byte comes with the whole answer.
    module_gateway.client_invocation_seconds = []
    for _ in range(3):
        started = time.monotonic()
        smr.invoke_endpoint(
            EndpointName="Measured",
            Body=tgi_body("go", 4, stream=False),
            ContentType="application/json",
        )
        module_gateway.client_invocation_seconds.append(time.monotonic() - started)
    for _ in range(2):  # the TGI container refuses a body that is not JSON: 4xx from the model
        with pytest.raises(ClientError) as raised:
            smr.invoke_endpoint(
                EndpointName="Measured", Body=b"{nope", ContentType="application/json"
            )
        assert raised.value.response["Error"]["Code"] == "ModelError"
    return module_gateway


def test_invocations_and_errors_are_counted_as_sagemaker_counts_them(measured):
    cw = measured.cloudwatch()
    assert statistics(cw, "Measured", "Invocations") == {"Sum": 11.0}
    # Two instances: each request counts 1/2 per instance.
    assert statistics(cw, "Measured", "InvocationsPerInstance") == {"Sum": 5.5}
    assert statistics(cw, "Measured", "Invocation4XXErrors", "Sum", "SampleCount") == {
        "Sum": 2.0,
        "SampleCount": 11.0,
    }
    assert statistics(cw, "Measured", "Invocation5XXErrors") == {"Sum": 0.0}
    assert statistics(cw, "Measured", "InvocationModelErrors") == {"Sum": 2.0}


def test_latencies_are_in_microseconds_and_a_stream_counts_to_its_last_byte(measured):
    cw = measured.cloudwatch()
    model = statistics(cw, "Measured", "ModelLatency", "Minimum", "Maximum", "SampleCount")
    assert model["SampleCount"] == 11
    # 8 tokens at 5 ms each: a stream's ModelLatency covers all of them (> 40 ms).
    assert model["Maximum"] > 40_000
    overhead = statistics(cw, "Measured", "OverheadLatency", "Maximum", "SampleCount")
    assert overhead["SampleCount"] == 11 and 0 < overhead["Maximum"] < model["Maximum"]
    first = statistics(cw, "Measured", "TimeToFirstByte", "Maximum", "SampleCount")
    assert first["SampleCount"] == 9  # the model errors sent no body
    assert first["Maximum"] > 0
    # Each stream's PayloadParts: one per token (the TGI container sends an event a token).
    assert statistics(cw, "Measured", "PayloadParts", "Sum", "SampleCount") == {
        "Sum": 48.0,
        "SampleCount": 6.0,
    }
    setup = statistics(cw, "Measured", "ModelSetupTime", "SampleCount", "Minimum")
    assert setup["SampleCount"] == 2 and setup["Minimum"] > 0


def test_the_latencies_agree_with_what_the_client_measured(measured):
    # The gateway's span of a request lies inside the client's: from its arrival to its
    # first byte or its last PayloadPart; the client adds signing, connecting and parsing.
    cw = measured.cloudwatch()
    firsts = sorted(first for first, _ in measured.client_seconds)
    totals = sorted(total for _, total in measured.client_seconds)
    # TimeToFirstByte's samples are the streams' and the invocations' (4 tokens, ≥ 20 ms).
    first_byte = statistics(cw, "Measured", "TimeToFirstByte", "Maximum")["Maximum"] / 1e6
    assert first_byte <= max(firsts + measured.client_invocation_seconds)
    model = statistics(cw, "Measured", "ModelLatency", "Maximum")["Maximum"] / 1e6
    assert model <= totals[-1]
    assert totals[-1] - model < 0.2  # the client's own share, even on a busy machine
    # 8 tokens 5 ms apart after the first: no stream was shorter than 35 ms, at either end.
    assert totals[0] >= 0.035 and model >= 0.035


def test_instances_and_concurrency_are_sampled_every_second(module_gateway):
    cw = module_gateway.cloudwatch()
    create_synthetic_endpoint(module_gateway.sm(), "Busy", count=1)
    # A stream of 2 s (400 tokens, 5 ms each) is in flight for two samples or more.
    response = module_gateway.smr().invoke_endpoint_with_response_stream(
        EndpointName="Busy", Body=tgi_body("go", 400), ContentType="application/json"
    )
    assert payload_bytes(response).count(b"data:") == 400
    wait_for(
        lambda: statistics(cw, "Busy", "InstanceCount", "SampleCount").get("SampleCount", 0) >= 2
    )
    count = statistics(cw, "Busy", "InstanceCount", "Minimum", "Maximum")
    # What the gateway routes and records, for a count other than 1 (seen once: Maximum 2).
    app = module_gateway.app
    routed = [(i.instance_id, i.up) for v in app.router.variants("Busy") for i in v.instances]
    recorded = app.store.list_instances("Busy")
    assert count["Minimum"] == count["Maximum"] == 1, (count, routed, recorded)
    start, end = window()
    data = cw.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "concurrency",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SageMaker",
                        "MetricName": "ConcurrentRequestsPerModel",
                        "Dimensions": dimensions("Busy"),
                    },
                    "Period": 10,
                    "Stat": "Maximum",
                },
            },
            {
                "Id": "calls",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SageMaker",
                        "MetricName": "Invocations",
                        "Dimensions": dimensions("Busy"),
                    },
                    "Period": 60,
                    "Stat": "Sum",
                },
                "Label": "calls",
            },
        ],
        StartTime=start,
        EndTime=end,
    )["MetricDataResults"]
    concurrency, calls = data
    assert concurrency["Id"] == "concurrency" and concurrency["StatusCode"] == "Complete"
    # One request: its model had it in flight while it streamed, and none after.
    assert set(concurrency["Values"]) <= {0.0, 1.0} and max(concurrency["Values"]) == 1.0
    timestamps = concurrency["Timestamps"]
    assert timestamps == sorted(timestamps, reverse=True)
    assert all(t.second % 10 == 0 for t in timestamps)  # high resolution: 10 s periods
    assert calls["Label"] == "calls" and sum(calls["Values"]) == 1


def test_list_metrics_names_each_variants_series(measured):
    cw = measured.cloudwatch()

    def series() -> list[dict]:
        return cw.list_metrics(
            Namespace="AWS/SageMaker", Dimensions=[{"Name": "EndpointName", "Value": "Measured"}]
        )["Metrics"]

    # The sampled series begin at the sampler's next second after the endpoint is up.
    wanted = {"Invocations", "ModelLatency", "ConcurrentRequestsPerModel", "InstanceCount"}
    wait_for(lambda: wanted <= {m["MetricName"] for m in series()}, timeout=10, interval=0.2)
    assert all(m["Dimensions"] == dimensions("Measured") for m in series())
    assert cw.list_metrics(Namespace="AWS/EC2")["Metrics"] == []


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({"Period": 45}, "InvalidParameterValue", "must be 1, 5, 10, 30 or a multiple of 60"),
        ({"Statistics": ["Median"]}, "InvalidParameterValue", "failed to satisfy constraint"),
        (
            {"Statistics": [], "ExtendedStatistics": ["p99"]},
            "InvalidParameterValue",
            "no percentiles",
        ),
        (
            {"Period": 1, "StartTime": dt.datetime(2026, 1, 1)},
            "InvalidParameterCombination",
            "exceeds the limit of 1440",
        ),
    ],
)
def test_bad_requests_get_cloudwatchs_error_codes(module_gateway, change, code, message):
    start, end = window()
    request = {
        "Namespace": "AWS/SageMaker",
        "MetricName": "Invocations",
        "Dimensions": dimensions("Measured"),
        "StartTime": start,
        "EndTime": end,
        "Period": 60,
        "Statistics": ["Sum"],
        **change,
    }
    if not request["Statistics"]:
        del request["Statistics"]
    with pytest.raises(ClientError) as raised:
        module_gateway.cloudwatch().get_metric_statistics(**request)
    error = raised.value.response["Error"]
    assert error["Code"] == code and message in error["Message"]


def test_an_unknown_endpoint_has_no_datapoints_and_signatures_are_checked(module_gateway):
    assert statistics(module_gateway.cloudwatch(), "Nobody", "Invocations") == {}
    from tests.harness import client

    with pytest.raises(ClientError) as raised:
        client("cloudwatch", module_gateway.url, "wrong").list_metrics()
    assert raised.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_prometheus_reads_the_same_figures_unsigned_on_loopback(measured):
    text = httpx.get(measured.url + "/metrics").text
    labels = 'endpoint_name="Measured",variant_name="AllTraffic"'
    assert f"sagemaker_invocations_count{{{labels}}} 11" in text
    assert f"sagemaker_invocation4_xx_errors_sum{{{labels}}} 2" in text
    assert "# TYPE sagemaker_model_latency_seconds summary" in text
    assert f"sagemaker_instance_count{{{labels}}} 2" in text


def test_off_loopback_prometheus_needs_a_signature_or_the_flag(tmp_path):
    # A gateway configured for a network address (its test socket is still on loopback).
    with running_gateway(tmp_path / "state", host="0.0.0.0") as gateway:
        url = gateway.url + "/metrics"
        refused = httpx.get(url)
        assert refused.status_code == 403, refused.text
        signed = httpx.get(url, headers=signed_headers(url, b"", method="GET"))
        assert signed.status_code == 200 and signed.text.endswith("\n")
    with running_gateway(tmp_path / "open", host="0.0.0.0", metrics_unsigned=True) as gateway:
        assert httpx.get(gateway.url + "/metrics").status_code == 200


def test_whole_minutes_survive_in_the_store(tmp_path):
    # The store keeps minutes for a day: a gateway started later reads them back.
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    clock = [1_800_000_000.0]
    first = Metrics(store, clock=lambda: clock[0])
    for offset in (0, 5, 65):
        first.add("Kept", "AllTraffic", "Invocations", 1.0, at=clock[0] + offset)
    clock[0] += 4 * 3600  # four hours later: past memory's 3 h
    asyncio.run(first.flush(final=True))
    later = Metrics(store, clock=lambda: clock[0])
    start = 1_800_000_000.0 - 60
    got = asyncio.run(later.statistics("kept", "AllTraffic", "Invocations", start, start + 600, 60))
    assert [(at - start, stat.total) for at, stat in got] == [(60, 2.0), (120, 1.0)]
    # Ten-second periods come from memory only: this gateway has none of those.
    assert (
        asyncio.run(later.statistics("Kept", "AllTraffic", "Invocations", start, start + 600, 10))
        == []
    )
    store.close()
