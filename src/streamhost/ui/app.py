"""The streamhost chat UI: the SageMaker streaming blog's Streamlit chatbot, made whole.

Run it with ``streamhost ui`` (or ``streamlit run`` on this file). It talks to the gateway
at ``STREAMHOST_GATEWAY_URL`` and preselects ``STREAMHOST_ENDPOINT``.

Kept from the original: the header, the sidebar with *Clear conversation*, the token and
temperature sliders (same ranges and defaults) and the three suggested prompts. Fixed: the
sliders reach the request whatever the API, the suggested prompts are buttons, earlier
turns are part of the prompt (rendered here on every request, see
:mod:`streamhost.endpoints.conversation`), the endpoint and its API (TGI or LMI) are picked
from the gateway instead of an environment variable (endpoints that take no invocations are
listed beside it, marked, with the cause of a failure, but cannot be chosen; when the one a
conversation uses goes away, the page says where the conversation continues), *Stop* ends
the answer and its generation, each answer shows TTFT and tokens/s, the endpoint's own
figures (instances, invocations, time to first byte, tokens/s, scaling activities) can be
shown beside the chat, and every failure is a short readable line. With *One bidirectional
stream* on, the conversation is held on one InvokeEndpointWithBidirectionalStream (the
model server keeps its history; each turn sends the new message only) and *Stop*
interrupts the answer on that stream; the stream ends with *Clear conversation*, another
endpoint or the toggle turned off (or, for a browser that goes away, with the gateway's
`--stream-timeout`).

Browser tests find the parts by their keys: each keyed container carries the CSS class
``st-key-<key>`` — ``answer-live`` / ``metrics-live`` for the answer being streamed,
``answer-<i>`` / ``metrics-<i>`` / ``error-<i>`` for turn ``i`` of the history,
``not-ready`` for the endpoints that cannot be chosen, ``endpoint-moved`` for the notice that
the conversation's endpoint went away, ``endpoint-view`` for the endpoint's metrics and
scaling activities (shown while the toggle ``endpoint-metrics`` is on), the toggle
``bidi``, and the buttons
``stop``, ``clear``, ``refresh`` and ``suggested-<i>``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from streamhost.endpoints.bidi import BidiChannel, BidiGeneration
from streamhost.endpoints.clients import (
    autoscaling_client,
    cloudwatch_client,
    control_client,
    invocation_client,
)
from streamhost.endpoints.conversation import Turn, clean_text, render_prompt, turn_prompt
from streamhost.endpoints.discovery import EndpointInfo, list_endpoints
from streamhost.endpoints.errors import describe_error
from streamhost.endpoints.figures import scaling_activities, variant_figures
from streamhost.endpoints.invocation import (
    Generation,
    GenerationParameters,
    request_body,
    start_generation,
)
from streamhost.engine.tiny import is_random_model
from streamhost.ui.choice import EndpointChoice, choose_endpoints, moved_notice, not_ready_line
from streamhost.ui.settings import UISettings

SUGGESTED_PROMPTS = (
    "what is SageMaker inference?",
    "provide the steps to make a pizza",
    "what is life?",
)
CURSOR = "▌"
# How long a new run waits for the answer an interrupted run was streaming to be wrapped up
# before it cuts that answer's connection itself (a model may be slow to its next token).
HANDOVER_SECONDS = 2.0


@dataclass
class _Streaming:
    """The answer a run is streaming, shared with the run that interrupts it.

    Streamlit starts the new run (after *Stop*, or a new message) in a new thread at once and
    stops the old one only at its next page update, so the two overlap: the new run waits
    for ``done`` before it draws the conversation the old run is still writing.
    """

    turn: Turn
    generation: Generation | BidiGeneration | None = None
    done: threading.Event = field(default_factory=threading.Event)


def _finish_interrupted_answer() -> None:
    streaming: _Streaming | None = st.session_state.get("streaming")
    if streaming is None or streaming.done.wait(HANDOVER_SECONDS):
        return
    if streaming.generation is not None:
        streaming.generation.stop()  # its reader wakes up, sees it stopped, and finishes
    streaming.done.wait(HANDOVER_SECONDS)


@st.cache_resource(show_spinner=False)
def _clients(gateway_url: str) -> tuple[Any, Any]:
    return control_client(gateway_url), invocation_client(gateway_url)


@st.cache_resource(show_spinner=False)
def _monitoring(gateway_url: str) -> tuple[Any, Any]:
    return cloudwatch_client(gateway_url), autoscaling_client(gateway_url)


@st.cache_data(ttl=10, show_spinner=False)
def _endpoints(gateway_url: str) -> list[EndpointInfo]:
    sm, _ = _clients(gateway_url)
    return list_endpoints(sm)


def _ask(prompt: str) -> None:
    st.session_state.pending_prompt = prompt


def _clear() -> None:
    st.session_state.turns = []
    _end_bidi()
    _forget_moved_notice()


def _end_bidi() -> None:
    """End the conversation's bidirectional stream, if it has one."""
    held = st.session_state.pop("bidi_channel", None)
    if held is not None:
        held[1].close()


def _bidi_channel(gateway_url: str, endpoint: str) -> tuple[BidiChannel, bool]:
    """The conversation's bidirectional stream to `endpoint` (opened on first use, and
    again for another endpoint), and whether the next turn is its first."""
    held = st.session_state.get("bidi_channel")
    if held is None or held[0] != (gateway_url, endpoint):
        _end_bidi()
        held = st.session_state.bidi_channel = [(gateway_url, endpoint), None, 0]
        held[1] = BidiChannel(gateway_url, endpoint)
    held[2] += 1
    return held[1], held[2] == 1


def _metrics(turn: Turn) -> str:
    parts = []
    if turn.ttft is not None:
        parts.append(f"TTFT {turn.ttft:.2f} s")
    parts.append(f"{turn.tokens} tokens")
    if turn.tokens_per_second is not None:
        parts.append(f"{turn.tokens_per_second:.1f} tokens/s")
    if turn.stopped:
        parts.append("stopped")
    return " · ".join(parts)


def _sidebar(settings: UISettings) -> tuple[EndpointInfo | None, str | None]:
    """Draw the sidebar; return the chosen endpoint (one that takes invocations) or why
    there is none."""
    chosen = None
    problem = None
    with st.sidebar:
        try:
            endpoints = _endpoints(settings.gateway_url)
        except Exception as error:
            problem = describe_error(error, settings.gateway_url)
            st.error(problem)
            endpoints = []
        choice = choose_endpoints(endpoints)
        if choice.ready:
            chosen = _endpoint_picker(choice, endpoints, settings)
        elif problem is None:
            problem = (
                "No endpoint is InService"
                + (" yet." if choice.not_ready else " on the gateway.")
                + " Deploy one with `streamhost deploy NAME --model tiny`, then press "
                "Refresh endpoints."
            )
            st.warning(problem)
        if choice.not_ready:
            with st.container(key="not-ready"):
                st.caption("Not ready for chat:")
                for info in choice.not_ready:
                    st.caption(not_ready_line(info))
        st.button("Refresh endpoints", key="refresh", on_click=_endpoints.clear)
        st.toggle("Endpoint metrics", key="endpoint-metrics", disabled=chosen is None)
        st.toggle(
            "One bidirectional stream",
            key="bidi",
            on_change=_end_bidi,
            help="Hold the conversation on one InvokeEndpointWithBidirectionalStream: "
            "the model server keeps the history, Stop interrupts the answer on it.",
        )
        st.caption(f"Gateway: {settings.gateway_url}")
        st.divider()
        st.button("Clear conversation", key="clear", on_click=_clear)
        st.slider("Number of tokens to generate", 10, 1024, 400, step=1, key="max_new_tokens")
        st.slider("Temperature", 0.1, 2.5, 0.1, step=0.1, key="temperature")
        st.markdown("### Suggested prompts:")
        for index, prompt in enumerate(SUGGESTED_PROMPTS):
            st.button(
                prompt, key=f"suggested-{index}", on_click=_ask, args=(prompt,), width="stretch"
            )
    return chosen, problem


def _endpoint_picker(
    choice: EndpointChoice, endpoints: list[EndpointInfo], settings: UISettings
) -> EndpointInfo:
    """The endpoint selector (endpoints that take invocations only) and the chosen one's
    details; a conversation whose endpoint went away is told where it continues."""
    previous = st.session_state.get("endpoint")  # the selector's value in the last run
    name = st.selectbox(
        "Endpoint",
        choice.names,
        index=choice.index(settings.endpoint),
        key="endpoint",
        on_change=_forget_moved_notice,
    )
    chosen = choice.ready[choice.index(name)]
    notice = moved_notice(previous, endpoints, chosen.name)
    if notice is not None and st.session_state.get("turns"):
        st.session_state.moved_notice = notice
    count = f" × {chosen.instances}" if chosen.instances else ""
    st.caption(
        f"{chosen.api.upper()} API · {chosen.model_id or 'custom model'} · "
        f"{chosen.instance_type or 'instance'}{count}"
    )
    return chosen


def _endpoint_view(endpoint: EndpointInfo, settings: UISettings) -> None:
    """The chosen endpoint's last 15 minutes, per variant, from CloudWatch's API on the
    gateway: instances, invocations, time to first byte and tokens/s as charts, and its
    Application Auto Scaling activities."""
    period = 10
    with st.container(key="endpoint-view"):
        try:
            sm, _ = _clients(settings.gateway_url)
            cloudwatch, scaling = _monitoring(settings.gateway_url)
            described = sm.describe_endpoint(EndpointName=endpoint.name)
            variants = [v["VariantName"] for v in described.get("ProductionVariants") or []]
            figures = variant_figures(
                cloudwatch, [(endpoint.name, v) for v in variants], seconds=900, period=period
            )
            activities = {
                f.variant: scaling_activities(scaling, endpoint.name, f.variant) for f in figures
            }
        except Exception as error:
            st.error(describe_error(error, settings.gateway_url))
            return
        for figure in figures:
            st.markdown(f"**{endpoint.name} / {figure.variant}**: the last 15 minutes")
            left, right = st.columns(2)
            _chart(left, "Instances", figure.per_period("InstanceCount", "Maximum"))
            _chart(right, f"Invocations per {period} s", figure.per_period("Invocations", "Sum"))
            _chart(left, "Time to first byte (ms)", figure.ttfb_ms_per_period())
            _chart(right, "Tokens per second", figure.tokens_per_second(period))
            rows = [
                {
                    "started": a["StartTime"].strftime("%H:%M:%S"),
                    "activity": a["Description"],
                    "status": a["StatusCode"],
                    "cause": a["Cause"],
                }
                for a in activities[figure.variant]
            ]
            if rows:
                st.dataframe(rows, hide_index=True)
            else:
                st.caption(
                    "No scaling activity: register the variant with Application Auto Scaling "
                    "to scale it with its load."
                )


def _chart(column: Any, title: str, points: list[tuple[Any, float]]) -> None:
    with column:
        st.caption(title)
        if points:
            st.line_chart(
                {"time": [at for at, _ in points], title: [value for _, value in points]},
                x="time",
                y=title,
                height=160,
            )
        else:
            st.caption("no data yet")


def _forget_moved_notice() -> None:
    st.session_state.pop("moved_notice", None)


def _history(turns: list[Turn]) -> None:
    for index, turn in enumerate(turns):
        with st.chat_message("user"):
            st.markdown(turn.user)
        with st.chat_message("assistant"):
            with st.container(key=f"answer-{index}"):
                st.markdown(clean_text(turn.assistant))
            if turn.error is not None:
                with st.container(key=f"error-{index}"):
                    st.error(turn.error)
            if turn.assistant or turn.ttft is not None:
                with st.container(key=f"metrics-{index}"):
                    st.caption(_metrics(turn))


def _answer(
    prompt: str, endpoint: EndpointInfo | None, problem: str | None, settings: UISettings
) -> None:
    """Stream the answer to ``prompt`` into the page. The turn joins the history at once and
    is updated as text arrives, so the answer so far survives a *Stop* (which ends this run
    at its next page update, see :class:`_Streaming`)."""
    turns: list[Turn] = st.session_state.turns
    earlier = list(turns)
    turn = Turn(user=prompt)
    turns.append(turn)
    streaming = st.session_state.streaming = _Streaming(turn)
    try:
        _stream_answer(prompt, earlier, streaming, endpoint, problem, settings)
    finally:
        streaming.done.set()


def _stream_answer(
    prompt: str,
    earlier: list[Turn],
    streaming: _Streaming,
    endpoint: EndpointInfo | None,
    problem: str | None,
    settings: UISettings,
) -> None:
    """The body of :func:`_answer`: ask, stream, and record the timings."""
    turn = streaming.turn
    with st.chat_message("user"):
        st.markdown(prompt)
    with st.chat_message("assistant"):
        with st.container(key="answer-live"):
            answer = st.empty()
        below = st.empty()
    stop = st.empty()
    if endpoint is None:
        turn.error = problem or "No InService endpoint to ask."
        with below.container(key="error-live"):
            st.error(turn.error)
        return
    parameters = GenerationParameters(
        max_new_tokens=int(st.session_state.max_new_tokens),
        temperature=float(st.session_state.temperature),
    )
    _, smr = _clients(settings.gateway_url)
    generation: Generation | None = None
    answer.markdown(CURSOR)
    stop.button("Stop", key="stop", icon=":material/stop_circle:")
    try:
        if st.session_state.get("bidi"):
            channel, first = _bidi_channel(settings.gateway_url, endpoint.name)
            body = request_body(endpoint.api, turn_prompt(prompt, first=first), parameters)
            generation = streaming.generation = channel.generate(body)
        else:
            body = request_body(endpoint.api, render_prompt(earlier, prompt), parameters)
            generation = streaming.generation = start_generation(smr, endpoint.name, body)
        for _ in generation:
            turn.assistant = generation.text
            answer.markdown(clean_text(generation.text) + CURSOR)
    except Exception as error:
        if generation is None or not generation.stopped:  # else: a stop cut the connection
            turn.error = describe_error(error, settings.gateway_url, endpoint.name)
    finally:
        # Also reached when Stop (or a new message) interrupts the script mid-loop.
        if generation is not None:
            if not generation.finished:
                generation.stop()
            turn.assistant = generation.text
            turn.stopped = generation.stopped and turn.error is None
            turn.ttft = generation.ttft
            turn.tokens = generation.tokens
            turn.tokens_per_second = generation.tokens_per_second
    stop.empty()
    answer.markdown(clean_text(turn.assistant))
    with below.container():
        if turn.error is not None:
            with st.container(key="error-live"):
                st.error(turn.error)
        if generation is not None:
            with st.container(key="metrics-live"):
                st.caption(_metrics(turn))


def main() -> None:
    """One run of the page."""
    settings = UISettings.from_environ()
    st.set_page_config(page_title="streamhost chat", page_icon="💬")
    st.session_state.setdefault("turns", [])
    st.header("Building a chatbot with a streamhost streaming endpoint")
    endpoint, problem = _sidebar(settings)
    _finish_interrupted_answer()
    if st.session_state.get("moved_notice"):
        with st.container(key="endpoint-moved"):
            st.warning(st.session_state.moved_notice)
    if endpoint is not None:
        model = f" (model `{endpoint.model_id}`)" if endpoint.model_id else ""
        operation = (
            "one InvokeEndpointWithBidirectionalStream"
            if st.session_state.get("bidi")
            else "InvokeEndpointWithResponseStream"
        )
        st.caption(
            f"Answers stream token by token from **{endpoint.name}**{model} through {operation}."
        )
        if is_random_model(endpoint.model_id):
            with st.container(key="random-model"):
                st.caption(
                    f"`{endpoint.model_id}` is a random model: its text is random by design. "
                    "For answers that read as English, deploy `tiny-chat` or a Hugging Face model."
                )
    if endpoint is not None and st.session_state.get("endpoint-metrics"):
        _endpoint_view(endpoint, settings)
    _history(st.session_state.turns)
    typed = st.chat_input("Input text", key="input")
    prompt = typed or st.session_state.pop("pending_prompt", None)
    if prompt and prompt.strip():
        _answer(prompt.strip(), endpoint, problem, settings)


main()
