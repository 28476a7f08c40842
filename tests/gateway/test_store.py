"""The SQL state store."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from streamhost.gateway.settings import sqlite_url
from streamhost.gateway.store import (
    AlreadyExists,
    EndpointRecord,
    InstanceRecord,
    ListQuery,
    ModelRecord,
    Store,
)

ARN = "arn:aws:sagemaker:us-east-1:123456789012"


@pytest.fixture
def store(tmp_path: Path):
    store = Store.open(sqlite_url(tmp_path / "state" / "gateway.db"))
    yield store
    store.close()


def model(name: str, created_at: float = 1.0) -> ModelRecord:
    spec = {"ModelName": name, "PrimaryContainer": {"Image": "img", "Environment": {"A": "1"}}}
    return ModelRecord(name, f"{ARN}:model/{name.lower()}", spec, created_at)


def endpoint(name: str, status: str = "InService", created_at: float = 1.0) -> EndpointRecord:
    return EndpointRecord(
        name=name,
        arn=f"{ARN}:endpoint/{name.lower()}",
        config_name="cfg",
        status=status,
        created_at=created_at,
        modified_at=created_at,
        deployment={"config": {"EndpointConfigName": "cfg"}, "models": {}},
    )


def test_sqlite_runs_in_wal_mode_with_foreign_keys(store: Store):
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    tables = set(sa.inspect(store.engine).get_table_names())
    assert {"models", "endpoint_configs", "endpoints", "instances", "tags"} <= tables


def test_names_are_unique_regardless_of_case(store: Store):
    store.create_model(model("Llama"))
    with pytest.raises(AlreadyExists):
        store.create_model(model("llama"))
    found = store.get_model("LLAMA")
    assert found is not None
    assert found.name == "Llama"
    assert found.spec["PrimaryContainer"]["Environment"] == {"A": "1"}


def test_state_survives_reopening_the_file(tmp_path: Path):
    url = sqlite_url(tmp_path / "gateway.db")
    first = Store.open(url)
    first.create_model(model("m"))
    first.create_endpoint(endpoint("e"), tags={"team": "llm"})
    first.close()
    second = Store.open(url)
    assert second.get_model("m") == model("m")
    restored = second.get_endpoint("e")
    assert restored is not None
    assert restored.deployment == {"config": {"EndpointConfigName": "cfg"}, "models": {}}
    assert second.get_tags(f"{ARN}:endpoint/e") == [("team", "llm")]
    second.close()


def test_listing_pages_through_every_row_once(store: Store):
    for i in range(7):
        store.create_model(model(f"m{i}", created_at=float(i // 2)))  # ties on time
    for sort_by in ("Name", "CreationTime"):
        for descending in (False, True):
            seen, cursor = [], None
            while True:
                query = ListQuery(sort_by=sort_by, descending=descending, limit=3, after=cursor)
                page, cursor = store.list_models(query)
                seen += [m.name for m in page]
                if cursor is None:
                    break
            assert sorted(seen) == [f"m{i}" for i in range(7)]
            assert len(seen) == 7
            if sort_by == "Name":
                assert seen == sorted(seen, reverse=descending)


def test_listing_filters_by_name_time_and_status(store: Store):
    store.create_endpoint(endpoint("Alpha", "InService", 1.0))
    store.create_endpoint(endpoint("beta", "Failed", 2.0))
    store.create_endpoint(endpoint("gamma", "InService", 3.0))

    def names(**filters: object) -> list[str]:
        page, _ = store.list_endpoints(ListQuery(sort_by="Name", descending=False, **filters))
        return [e.name for e in page]

    assert names(name_contains="ALP") == ["Alpha"]
    assert names(status="InService") == ["Alpha", "gamma"]
    assert names(created_after=1.0, created_before=3.0) == ["beta"]
    assert names(modified_after=2.5) == ["gamma"]
    assert names(name_contains="%") == []


def test_conditional_update_applies_only_from_expected_status(store: Store):
    store.create_endpoint(endpoint("e", "Creating"))
    assert store.update_endpoint("e", expect=["InService"], status="Deleting") is None
    updated = store.update_endpoint(
        "E", expect=["Creating"], status="InService", pending={"config": {}, "models": {}}
    )
    assert updated is not None
    assert updated.status == "InService"
    assert updated.pending == {"config": {}, "models": {}}
    assert store.update_endpoint("missing", status="Failed") is None


def test_concurrent_transitions_let_exactly_one_win(store: Store):
    store.create_endpoint(endpoint("e", "InService"))
    wins = []

    def attempt() -> None:
        if store.update_endpoint("e", expect=["InService"], status="Updating") is not None:
            wins.append(1)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1


def test_deleting_an_endpoint_removes_its_instances_and_tags(store: Store):
    store.create_endpoint(endpoint("e"), tags={"k": "v"})
    store.put_instance(InstanceRecord("i-1", "e", "AllTraffic", "Healthy", port=9000, pid=42))
    assert store.delete_endpoint("E") is True
    assert store.list_instances() == []
    assert store.get_tags(f"{ARN}:endpoint/e") == []
    assert store.delete_endpoint("e") is False


def test_instances_are_recorded_for_the_provisioner(store: Store):
    store.create_endpoint(endpoint("e"))
    first = InstanceRecord(
        "i-1", "e", "AllTraffic", "Starting", port=9000, pid=42, secret="s", started_at=5.0
    )
    store.put_instance(first)
    store.put_instance(InstanceRecord("i-2", "e", "AllTraffic", "Starting", started_at=6.0))
    assert store.set_instance_state("i-1", "Healthy") is True
    assert store.set_instance_state("nope", "Healthy") is False
    instances = store.list_instances("E")
    assert [i.instance_id for i in instances] == ["i-1", "i-2"]
    assert instances[0].state == "Healthy"
    assert (instances[0].port, instances[0].pid, instances[0].secret) == (9000, 42, "s")
    assert store.delete_instance("i-2") is True
    assert [i.instance_id for i in store.list_instances()] == ["i-1"]
    with pytest.raises(KeyError):
        store.put_instance(InstanceRecord("i-3", "ghost", "AllTraffic", "Starting"))


def test_tags_are_set_overwritten_and_removed(store: Store):
    arn = f"{ARN}:model/m"
    store.create_model(model("m"), tags={"b": "1"})
    store.add_tags(arn, {"a": "2", "b": "3"})
    assert store.get_tags(arn) == [("a", "2"), ("b", "3")]
    store.delete_tags(arn, ["a", "zzz"])
    assert store.get_tags(arn) == [("b", "3")]
    store.delete_model("m")
    assert store.get_tags(arn) == []


def test_in_memory_sqlite_is_shared_across_threads():
    store = Store.open("sqlite://")
    store.create_model(model("m"))
    found = []
    thread = threading.Thread(target=lambda: found.append(store.get_model("m")))
    thread.start()
    thread.join()
    assert found == [model("m")]
    store.close()
