"""Routing decisions: weights, target variant, least outstanding, sticky sessions."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

import streamhost.gateway.router as router_module
from streamhost.gateway.router import (
    EndpointNotFound,
    Instance,
    NoHealthyInstance,
    Router,
    SessionGone,
    UnknownVariant,
    Variant,
    parse_session_header,
)


def instance(name: str, variant: str = "AllTraffic", port: int = 1) -> Instance:
    return Instance(name, variant, "127.0.0.1", port, "secret")


def fleet(router: Router, *variants: Variant, endpoint: str = "ep") -> None:
    router.publish(endpoint, variants)


def test_sequential_requests_alternate_between_idle_instances():
    router = Router()
    a, b = instance("a"), instance("b")
    fleet(router, Variant("AllTraffic", instances=[a, b]))
    chosen = []
    for _ in range(10):
        picked = router.choose("ep")
        chosen.append(picked.instance_id)
        router.release(picked)
    assert Counter(chosen) == {"a": 5, "b": 5}


def test_the_instance_with_fewest_requests_in_flight_is_chosen():
    router = Router()
    a, b = instance("a"), instance("b")
    fleet(router, Variant("AllTraffic", instances=[a, b]))
    a.outstanding = 3
    assert all(router.choose("ep") is b for _ in range(3))
    assert b.outstanding == 3


def test_variants_receive_traffic_in_proportion_to_their_weights():
    router = Router()
    fleet(
        router,
        Variant("big", weight=3.0, instances=[instance("a", "big")]),
        Variant("small", weight=1.0, instances=[instance("b", "small")]),
    )
    counts = Counter()
    for _ in range(4000):
        picked = router.choose("ep")
        counts[picked.variant] += 1
        router.release(picked)
    assert 0.7 < counts["big"] / 4000 < 0.8


def test_target_variant_overrides_weights_even_at_weight_zero():
    router = Router()
    fleet(
        router,
        Variant("live", weight=1.0, instances=[instance("a", "live")]),
        Variant("shadow", weight=0.0, instances=[instance("b", "shadow")]),
    )
    assert all(router.choose("ep").variant == "live" for _ in range(20))
    assert router.choose("ep", target_variant="Shadow").variant == "shadow"
    with pytest.raises(UnknownVariant):
        router.choose("ep", target_variant="nope")


def test_unknown_endpoint_and_no_live_instance_are_different_errors():
    router = Router()
    with pytest.raises(EndpointNotFound):
        router.choose("ep")
    a = instance("a")
    fleet(router, Variant("AllTraffic", instances=[a]))
    router.mark_down(a)
    with pytest.raises(NoHealthyInstance):
        router.choose("ep")
    router.mark_up(a)
    assert router.choose("ep") is a


def test_endpoint_names_are_case_insensitive():
    router = Router()
    fleet(router, Variant("AllTraffic", instances=[instance("a")]), endpoint="My-Endpoint")
    assert router.choose("my-endpoint").instance_id == "a"


def test_a_session_sticks_to_its_instance():
    router = Router()
    a, b = instance("a"), instance("b")
    fleet(router, Variant("AllTraffic", instances=[a, b]))
    router.pin("s1", "ep", b, time.time() + 60)
    for _ in range(5):
        picked = router.choose("ep", session_id="s1")
        assert picked is b
        router.release(picked)


def test_a_session_whose_instance_stopped_is_an_error_not_a_reroute():
    router = Router()
    a, b = instance("a"), instance("b")
    fleet(router, Variant("AllTraffic", instances=[a, b]))
    router.pin("s1", "ep", b, None)
    router.retire(b)
    with pytest.raises(SessionGone):
        router.choose("ep", session_id="s1")
    # Forgotten after the error: the id is now unknown and routed normally.
    assert router.choose("ep", session_id="s1") is a


def test_closed_and_expired_sessions_are_forgotten(monkeypatch):
    router = Router()
    a = instance("a")
    fleet(router, Variant("AllTraffic", instances=[a]))
    now = time.time()
    router.pin("closed", "ep", a, None)
    router.forget("closed")
    router.pin("short", "ep", a, now + 10)
    router.pin("long", "ep", a, now + 1000)
    router.pin("past", "ep", a, now - 5)
    assert router.session_count() == 2
    monkeypatch.setattr(router_module.time, "time", lambda: now + 100)
    router.choose("ep", session_id="short")
    assert router.session_count() == 1
    assert router.choose("ep", session_id="long") is a


def test_each_use_extends_a_session_by_its_lifetime(monkeypatch):
    router = Router()
    a = instance("a")
    fleet(router, Variant("AllTraffic", instances=[a]))
    now = time.time()
    router.pin("s", "ep", a, now + 60)
    for step in (50, 100, 150):  # each use comes before the extended expiry
        monkeypatch.setattr(router_module.time, "time", lambda step=step: now + step)
        assert router.choose("ep", session_id="s") is a
    assert router.session_count() == 1


def test_parse_session_header_reads_the_container_standard_format():
    session_id, expires = parse_session_header("abc-123; Expires=2030-01-02T03:04:05Z")
    assert session_id == "abc-123"
    assert expires == pytest.approx(1893553445.0)
    assert parse_session_header("abc") == ("abc", None)
    assert parse_session_header("abc; Expires=garbage") == ("abc", None)


@given(st.text(max_size=200))
def test_parse_session_header_never_raises(value):
    session_id, expires = parse_session_header(value)
    assert isinstance(session_id, str)
    assert expires is None or isinstance(expires, float)
