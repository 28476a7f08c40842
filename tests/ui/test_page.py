"""The chat page run by Streamlit's own test runner (AppTest: the script as Streamlit runs it,
no browser) against the real gateway: which endpoints it offers, how it shows the others,
and what it says when the conversation's endpoint goes away."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from streamhost.client.boto import gateway_client
from streamhost.deploy import DeploySpec, delete_endpoint, deploy
from streamhost.endpoints.clients import control_client
from streamhost.ui.choice import markdown_text
from tests.harness import GatewayProcess, wait_for

from .conftest import KEYS, REPO

if TYPE_CHECKING:  # Streamlit is imported by the tests, not by every worker's collection
    from streamlit.testing.v1 import AppTest

# The chat page against the UI tests' gateway and its tiny-model endpoint.
pytestmark = pytest.mark.slow

APP = REPO / "src" / "streamhost" / "ui" / "app.py"
BROKEN = "page-broken"


@pytest.fixture(scope="module")
def broken_endpoint(
    ui_gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An endpoint whose model folder does not exist, once Failed."""
    sm = control_client(ui_gateway.url, KEYS)
    missing = tmp_path_factory.mktemp("models") / "no-such-model"
    spec = DeploySpec(BROKEN, model=str(missing), instance_type="ml.m5.large")
    deploy(sm, spec, wait=False)

    def failed() -> bool:
        return sm.describe_endpoint(EndpointName=BROKEN)["EndpointStatus"] == "Failed"

    try:
        wait_for(failed, 180, f"{BROKEN} to fail", interval=0.5)
        yield BROKEN
    finally:
        delete_endpoint(sm, BROKEN)


@pytest.fixture
def page(gateway_home: GatewayProcess, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The page, talking to the gateway, its endpoint list read afresh."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("STREAMHOST_GATEWAY_URL", gateway_home.url)
    st.cache_data.clear()
    return AppTest.from_file(str(APP), default_timeout=120)


def texts(elements) -> list[str]:
    return [str(element.value) for element in elements]


def test_failed_endpoints_are_listed_with_the_cause_but_cannot_be_chosen(
    page: AppTest, broken_endpoint: str, chat_endpoint: str
) -> None:
    page.run()
    assert not page.exception
    options = page.sidebar.selectbox(key="endpoint").options
    assert chat_endpoint in options and broken_endpoint not in options
    name = markdown_text(broken_endpoint)  # as Markdown, which shows it as it is
    listed = [text for text in texts(page.sidebar.caption) if name in text]
    assert len(listed) == 1, texts(page.sidebar.caption)
    assert "Failed: an instance could not load its model" in listed[0]
    assert "Last log lines" not in listed[0]


def test_the_sidebar_names_the_endpoint_selector_once(page: AppTest, chat_endpoint: str) -> None:
    page.run()
    labels = [page.sidebar.selectbox(key="endpoint").label]
    labels += texts(page.sidebar.markdown) + texts(page.sidebar.header)
    labels += texts(page.sidebar.subheader)
    assert [label for label in labels if "Endpoint" in label.replace("#", "").strip()] == [
        "Endpoint"
    ]


def test_deleting_the_chosen_endpoint_says_where_the_conversation_goes(
    page: AppTest, ui_gateway: GatewayProcess, monkeypatch: pytest.MonkeyPatch, chat_endpoint: str
) -> None:
    doomed = "pagedoomed"
    sm = control_client(ui_gateway.url, KEYS)
    deploy(sm, DeploySpec(doomed, model="synthetic:1", instance_type="ml.m5.large"))
    try:
        monkeypatch.setenv("STREAMHOST_ENDPOINT", doomed)
        page.run()
        assert page.sidebar.selectbox(key="endpoint").value == doomed
        page.chat_input[0].set_value("count").run()
        assert not page.exception and not page.error, texts(page.error)
        assert not texts(page.warning)
    finally:
        delete_endpoint(sm, doomed)
    page.sidebar.button(key="refresh").click().run()
    now = page.sidebar.selectbox(key="endpoint").value
    assert now != doomed
    assert texts(page.warning) == [
        f"Endpoint **{doomed}** no longer exists: the conversation now continues with "
        f"**{markdown_text(now)}**."
    ]
    page.sidebar.button(key="clear").click().run()
    assert not texts(page.warning)


def test_the_endpoint_view_charts_its_figures_and_scaling_activities(
    page: AppTest, ui_gateway: GatewayProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    watched = "pagewatched"
    sm = control_client(ui_gateway.url, KEYS)
    deploy(sm, DeploySpec(watched, model="synthetic:1", instance_type="ml.m5.large"))
    try:
        monkeypatch.setenv("STREAMHOST_ENDPOINT", watched)
        page.run()
        page.chat_input[0].set_value("count").run()
        page.sidebar.toggle(key="endpoint-metrics").set_value(True).run()
        assert not page.exception and not page.error, texts(page.error)
        captions = texts(page.caption)
        for title in ("Instances", "Invocations per 10 s", "Time to first byte (ms)"):
            assert title in captions, captions
        assert len(page.get("vega_lite_chart")) >= 3
        assert any("No scaling activity" in text for text in captions), captions

        # A minimum above the current count: the scaler brings the variant within bounds.
        scaling = gateway_client("application-autoscaling", ui_gateway.url, credentials=KEYS)
        scaling.register_scalable_target(
            ServiceNamespace="sagemaker",
            ResourceId=f"endpoint/{watched}/variant/AllTraffic",
            ScalableDimension="sagemaker:variant:DesiredInstanceCount",
            MinCapacity=2,
            MaxCapacity=3,
        )

        def scaled() -> bool:
            return bool(
                scaling.describe_scaling_activities(
                    ServiceNamespace="sagemaker",
                    ResourceId=f"endpoint/{watched}/variant/AllTraffic",
                )["ScalingActivities"]
            )

        # Waited for through the API (a page run takes seconds on a busy machine), then shown.
        # The endpoint is Updating while it scales: it still serves, so it stays chosen.
        wait_for(scaled, 60, "a scaling activity", interval=0.5)
        page.run()
        assert page.sidebar.selectbox(key="endpoint").value == watched
        assert f"**{watched} / AllTraffic**: the last 15 minutes" in texts(page.markdown)
        assert page.dataframe, texts(page.caption)
        (row,) = page.dataframe[0].value.to_dict("records")[:1]
        assert row["activity"] == "Setting desired instance count to 2."
        assert row["cause"] == "minimum capacity was set to 2"
    finally:
        delete_endpoint(sm, watched)
