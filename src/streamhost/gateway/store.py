"""The gateway's state: models, endpoint configs, endpoints, instances and tags, in SQL.

SQLAlchemy Core over any database URL; a SQLite file by default (WAL journal, so readers
never wait for the writer). Names are unique case-insensitively, as in SageMaker, so every
table is keyed by the lower-cased name and keeps the name as the client spelled it.
JSON documents are stored as text so the schema is the same on SQLite and PostgreSQL.

The API is synchronous and every method is one transaction; async callers run it in a
thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

__all__ = [
    "AlreadyExists",
    "Cursor",
    "EndpointConfigRecord",
    "EndpointRecord",
    "InstanceRecord",
    "ListQuery",
    "ModelRecord",
    "Store",
]

metadata = sa.MetaData()

models_table = sa.Table(
    "models",
    metadata,
    sa.Column("key", sa.String(63), primary_key=True),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("arn", sa.String(2048), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

endpoint_configs_table = sa.Table(
    "endpoint_configs",
    metadata,
    sa.Column("key", sa.String(63), primary_key=True),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("arn", sa.String(2048), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

endpoints_table = sa.Table(
    "endpoints",
    metadata,
    sa.Column("key", sa.String(63), primary_key=True),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("arn", sa.String(2048), nullable=False),
    sa.Column("config_name", sa.String(63), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("failure_reason", sa.Text),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("modified_at", sa.Double, nullable=False),
    # What is running: the config and models as they were when deployed, so the endpoint
    # can be restored after a restart even if its config or models were deleted since.
    sa.Column("deployed_config_name", sa.String(63)),
    sa.Column("deployment", sa.Text),
    sa.Column("deployed_at", sa.Double),
    # What a Creating/Updating endpoint is moving to.
    sa.Column("pending_config_name", sa.String(63)),
    sa.Column("pending", sa.Text),
    sa.Column("pending_since", sa.Double),
    sa.Column("deployment_config", sa.Text),
)

instances_table = sa.Table(
    "instances",
    metadata,
    sa.Column("instance_id", sa.String(128), primary_key=True),
    sa.Column(
        "endpoint_key",
        sa.String(63),
        sa.ForeignKey("endpoints.key", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("endpoint_name", sa.String(63), nullable=False),
    sa.Column("variant_name", sa.String(63), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("port", sa.Integer),
    sa.Column("pid", sa.Integer),
    sa.Column("secret", sa.String(255), nullable=False),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)

tags_table = sa.Table(
    "tags",
    metadata,
    sa.Column("resource_arn", sa.String(2048), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

# Endpoint metrics by whole minute (`metrics.py`), kept a day.
metric_minutes_table = sa.Table(
    "metric_minutes",
    metadata,
    sa.Column("endpoint_key", sa.String(63), primary_key=True),
    sa.Column("variant", sa.String(63), primary_key=True),
    sa.Column("metric", sa.String(64), primary_key=True),
    sa.Column("minute", sa.Integer, primary_key=True),
    sa.Column("count", sa.Double, nullable=False),
    sa.Column("total", sa.Double, nullable=False),
    sa.Column("low", sa.Double, nullable=False),
    sa.Column("high", sa.Double, nullable=False),
)

# Application Auto Scaling's scalable targets, scaling policies and scaling activities, as
# JSON documents by kind and key (`autoscaling.py`).
autoscaling_table = sa.Table(
    "autoscaling",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("key", sa.String(1024), primary_key=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("at", sa.Double, nullable=False),
)


class AlreadyExists(Exception):
    """A create found a row with the same (case-insensitive) name."""


@dataclass(frozen=True)
class ModelRecord:
    """A model: its CreateModel input (`spec`, without Tags) and when it was created."""

    name: str
    arn: str
    spec: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class EndpointConfigRecord:
    """An endpoint config: its CreateEndpointConfig input (without Tags)."""

    name: str
    arn: str
    spec: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class EndpointRecord:
    """An endpoint's lifecycle state and the deployments it runs or is moving to.

    `deployment` and `pending` are snapshots `{"config": {...}, "models": {name: {...}}}`.
    """

    name: str
    arn: str
    config_name: str
    status: str
    created_at: float
    modified_at: float
    failure_reason: str | None = None
    deployed_config_name: str | None = None
    deployment: dict[str, Any] | None = None
    deployed_at: float | None = None
    pending_config_name: str | None = None
    pending: dict[str, Any] | None = None
    pending_since: float | None = None
    deployment_config: dict[str, Any] | None = None


@dataclass(frozen=True)
class InstanceRecord:
    """One model-server instance behind an endpoint variant (written by the provisioner)."""

    instance_id: str
    endpoint_name: str
    variant_name: str
    state: str
    host: str = "127.0.0.1"
    port: int | None = None
    pid: int | None = None
    secret: str = ""
    started_at: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


Cursor = tuple[Any, str]
"""Where a listing page ended: (value of the sort column, key) of its last row."""


@dataclass(frozen=True)
class ListQuery:
    """Filters, order and page for the List* operations."""

    sort_by: str = "CreationTime"  # Name | CreationTime | Status
    descending: bool = True
    limit: int = 10
    after: Cursor | None = None
    name_contains: str | None = None
    created_before: float | None = None
    created_after: float | None = None
    modified_before: float | None = None
    modified_after: float | None = None
    status: str | None = None


def _key(name: str) -> str:
    return name.lower()


def _dump(document: Any) -> str | None:
    return None if document is None else json.dumps(document, separators=(",", ":"))


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_ENDPOINT_JSON = ("deployment", "pending", "deployment_config")


class Store:
    """State of the control plane in a SQL database; every method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect to `url` (any SQLAlchemy URL) and create the tables that are missing."""
        engine = _create_engine(url)
        metadata.create_all(engine)
        return cls(engine)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    # -- models ------------------------------------------------------------------------

    def create_model(self, model: ModelRecord, tags: dict[str, str] | None = None) -> None:
        """Insert a model (and its tags); `AlreadyExists` if the name is taken."""
        row = {"key": _key(model.name), "name": model.name, "arn": model.arn}
        row |= {"spec": _dump(model.spec), "created_at": model.created_at}
        self._insert(models_table, row, model.arn, tags)

    def get_model(self, name: str) -> ModelRecord | None:
        """The model called `name` (any case), or None."""
        row = self._get(models_table, name)
        return None if row is None else _model(row)

    def get_models(self, names: Collection[str]) -> dict[str, ModelRecord]:
        """The models among `names` that exist, by the name as asked for."""
        keys = {_key(name): name for name in names}
        if not keys:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(models_table).where(models_table.c.key.in_(keys))
            ).mappings()
            return {keys[row["key"]]: _model(row) for row in rows}

    def delete_model(self, name: str) -> bool:
        """Delete a model and its tags; False if there was none."""
        return self._delete(models_table, name)

    def list_models(self, query: ListQuery) -> tuple[list[ModelRecord], Cursor | None]:
        """One page of models and the cursor of the next page (None on the last)."""
        rows, cursor = self._list(models_table, query)
        return [_model(row) for row in rows], cursor

    # -- endpoint configs --------------------------------------------------------------

    def create_endpoint_config(
        self, config: EndpointConfigRecord, tags: dict[str, str] | None = None
    ) -> None:
        """Insert an endpoint config (and its tags); `AlreadyExists` if the name is taken."""
        row = {"key": _key(config.name), "name": config.name, "arn": config.arn}
        row |= {"spec": _dump(config.spec), "created_at": config.created_at}
        self._insert(endpoint_configs_table, row, config.arn, tags)

    def get_endpoint_config(self, name: str) -> EndpointConfigRecord | None:
        """The endpoint config called `name` (any case), or None."""
        row = self._get(endpoint_configs_table, name)
        return None if row is None else _endpoint_config(row)

    def delete_endpoint_config(self, name: str) -> bool:
        """Delete an endpoint config and its tags; False if there was none."""
        return self._delete(endpoint_configs_table, name)

    def list_endpoint_configs(
        self, query: ListQuery
    ) -> tuple[list[EndpointConfigRecord], Cursor | None]:
        """One page of endpoint configs and the cursor of the next page."""
        rows, cursor = self._list(endpoint_configs_table, query)
        return [_endpoint_config(row) for row in rows], cursor

    # -- endpoints ---------------------------------------------------------------------

    def create_endpoint(self, endpoint: EndpointRecord, tags: dict[str, str] | None = None) -> None:
        """Insert an endpoint (and its tags); `AlreadyExists` if the name is taken."""
        row = {
            "key": _key(endpoint.name),
            "name": endpoint.name,
            "arn": endpoint.arn,
            "config_name": endpoint.config_name,
            "status": endpoint.status,
            "failure_reason": endpoint.failure_reason,
            "created_at": endpoint.created_at,
            "modified_at": endpoint.modified_at,
            "deployed_config_name": endpoint.deployed_config_name,
            "deployed_at": endpoint.deployed_at,
            "pending_config_name": endpoint.pending_config_name,
            "pending_since": endpoint.pending_since,
        }
        row |= {column: _dump(getattr(endpoint, column)) for column in _ENDPOINT_JSON}
        self._insert(endpoints_table, row, endpoint.arn, tags)

    def get_endpoint(self, name: str) -> EndpointRecord | None:
        """The endpoint called `name` (any case), or None."""
        row = self._get(endpoints_table, name)
        return None if row is None else _endpoint(row)

    def update_endpoint(
        self, name: str, *, expect: Collection[str] | None = None, **changes: Any
    ) -> EndpointRecord | None:
        """Apply `changes` (EndpointRecord fields) if the endpoint exists and, when `expect`
        is given, its status is one of those; the updated record, or None if not applied.

        The status check and the write are one statement, so two callers racing to move
        the same endpoint cannot both succeed.
        """
        values = {
            column: _dump(value) if column in _ENDPOINT_JSON else value
            for column, value in changes.items()
        }
        table = endpoints_table
        with self.engine.begin() as conn:
            stmt = sa.update(table).where(table.c.key == _key(name)).values(**values)
            if expect is not None:
                stmt = stmt.where(table.c.status.in_(list(expect)))
            if conn.execute(stmt).rowcount == 0:
                return None
            row = conn.execute(sa.select(table).where(table.c.key == _key(name))).mappings()
            return _endpoint(row.one())

    def delete_endpoint(self, name: str) -> bool:
        """Delete an endpoint with its instances and tags; False if there was none."""
        return self._delete(endpoints_table, name, children=instances_table.c.endpoint_key)

    def list_endpoints(self, query: ListQuery) -> tuple[list[EndpointRecord], Cursor | None]:
        """One page of endpoints and the cursor of the next page."""
        rows, cursor = self._list(endpoints_table, query)
        return [_endpoint(row) for row in rows], cursor

    def endpoints_with_status(self, statuses: Collection[str]) -> list[EndpointRecord]:
        """Every endpoint whose status is one of `statuses`, oldest first."""
        table = endpoints_table
        stmt = (
            sa.select(table)
            .where(table.c.status.in_(list(statuses)))
            .order_by(table.c.created_at, table.c.key)
        )
        with self.engine.connect() as conn:
            return [_endpoint(row) for row in conn.execute(stmt).mappings()]

    # -- instances ---------------------------------------------------------------------

    def put_instance(self, instance: InstanceRecord) -> None:
        """Insert or replace an instance; `KeyError` if its endpoint does not exist."""
        row = {
            "instance_id": instance.instance_id,
            "endpoint_key": _key(instance.endpoint_name),
            "endpoint_name": instance.endpoint_name,
            "variant_name": instance.variant_name,
            "state": instance.state,
            "host": instance.host,
            "port": instance.port,
            "pid": instance.pid,
            "secret": instance.secret,
            "started_at": instance.started_at,
            "detail": _dump(instance.detail),
        }
        table = instances_table
        try:
            with self.engine.begin() as conn:
                endpoint = endpoints_table.c.key == row["endpoint_key"]
                if conn.execute(sa.select(endpoints_table.c.key).where(endpoint)).first() is None:
                    raise KeyError(instance.endpoint_name)
                conn.execute(sa.delete(table).where(table.c.instance_id == instance.instance_id))
                conn.execute(sa.insert(table).values(**row))
        except IntegrityError:
            raise KeyError(instance.endpoint_name) from None

    def set_instance_state(self, instance_id: str, state: str) -> bool:
        """Change an instance's state; False if there is no such instance."""
        table = instances_table
        with self.engine.begin() as conn:
            stmt = sa.update(table).where(table.c.instance_id == instance_id).values(state=state)
            return conn.execute(stmt).rowcount > 0

    def list_instances(self, endpoint_name: str | None = None) -> list[InstanceRecord]:
        """The instances of one endpoint, or of all endpoints."""
        table = instances_table
        stmt = sa.select(table).order_by(table.c.started_at, table.c.instance_id)
        if endpoint_name is not None:
            stmt = stmt.where(table.c.endpoint_key == _key(endpoint_name))
        with self.engine.connect() as conn:
            return [_instance(row) for row in conn.execute(stmt).mappings()]

    def delete_instance(self, instance_id: str) -> bool:
        """Forget one instance; False if there was none."""
        table = instances_table
        with self.engine.begin() as conn:
            stmt = sa.delete(table).where(table.c.instance_id == instance_id)
            return conn.execute(stmt).rowcount > 0

    # -- tags --------------------------------------------------------------------------

    # -- metrics ----------------------------------------------------------------------------

    def put_metrics(self, rows: Collection[tuple[Any, int, Any]], older_than: int) -> None:
        """Add whole minutes ((series, minute, Stat) each; a minute written before is
        merged) and delete the minutes before `older_than`."""
        table = metric_minutes_table
        with self.engine.begin() as conn:
            for series, minute, stat in rows:
                key = (
                    (table.c.endpoint_key == series.endpoint)
                    & (table.c.variant == series.variant)
                    & (table.c.metric == series.metric)
                    & (table.c.minute == minute)
                )
                old = conn.execute(sa.select(table).where(key)).mappings().first()
                if old is not None:
                    conn.execute(
                        table.update()
                        .where(key)
                        .values(
                            count=old["count"] + stat.count,
                            total=old["total"] + stat.total,
                            low=min(old["low"], stat.low),
                            high=max(old["high"], stat.high),
                        )
                    )
                    continue
                conn.execute(
                    table.insert().values(
                        endpoint_key=series.endpoint,
                        variant=series.variant,
                        metric=series.metric,
                        minute=minute,
                        count=stat.count,
                        total=stat.total,
                        low=stat.low,
                        high=stat.high,
                    )
                )
            conn.execute(table.delete().where(table.c.minute < older_than))

    def metric_minutes(
        self, series: Any, start: float, end: float
    ) -> list[tuple[int, float, float, float, float]]:
        """(minute, count, sum, min, max) of a series' stored minutes in [start, end)."""
        table = metric_minutes_table
        query = (
            sa.select(table.c.minute, table.c.count, table.c.total, table.c.low, table.c.high)
            .where(
                (table.c.endpoint_key == series.endpoint)
                & (table.c.variant == series.variant)
                & (table.c.metric == series.metric)
                & (table.c.minute >= start)
                & (table.c.minute < end)
            )
            .order_by(table.c.minute)
        )
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(query)]

    # -- autoscaling documents ----------------------------------------------------------

    def put_document(self, kind: str, key: str, body: dict[str, Any], at: float) -> None:
        """Create or replace one document."""
        table = autoscaling_table
        with self.engine.begin() as conn:
            conn.execute(table.delete().where((table.c.kind == kind) & (table.c.key == key)))
            conn.execute(table.insert().values(kind=kind, key=key, body=json.dumps(body), at=at))

    def delete_documents(self, kind: str, keys: Collection[str]) -> None:
        """Delete documents by key (missing ones are no error)."""
        table = autoscaling_table
        with self.engine.begin() as conn:
            conn.execute(table.delete().where((table.c.kind == kind) & table.c.key.in_(keys)))

    def documents(self, kind: str, since: float = 0.0) -> list[dict[str, Any]]:
        """A kind's documents written at `since` or later, oldest first."""
        table = autoscaling_table
        query = (
            sa.select(table.c.body)
            .where((table.c.kind == kind) & (table.c.at >= since))
            .order_by(table.c.at)
        )
        with self.engine.connect() as conn:
            return [json.loads(body) for (body,) in conn.execute(query)]

    def add_tags(self, arn: str, tags: dict[str, str]) -> None:
        """Set tags on a resource, replacing the values of keys it already has."""
        with self.engine.begin() as conn:
            _put_tags(conn, arn, tags)

    def get_tags(self, arn: str) -> list[tuple[str, str]]:
        """A resource's tags as (key, value), ordered by key."""
        table = tags_table
        stmt = sa.select(table.c.key, table.c.value).where(table.c.resource_arn == arn)
        with self.engine.connect() as conn:
            return [(k, v) for k, v in conn.execute(stmt.order_by(table.c.key))]

    def delete_tags(self, arn: str, keys: Collection[str]) -> None:
        """Remove the given tag keys from a resource (missing keys are ignored)."""
        table = tags_table
        with self.engine.begin() as conn:
            conn.execute(
                sa.delete(table).where(table.c.resource_arn == arn, table.c.key.in_(list(keys)))
            )

    # -- shared ------------------------------------------------------------------------

    def _insert(
        self, table: sa.Table, row: dict[str, Any], arn: str, tags: dict[str, str] | None
    ) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(table).values(**row))
                # A resource that was deleted and created again starts without tags.
                conn.execute(sa.delete(tags_table).where(tags_table.c.resource_arn == arn))
                if tags:
                    _put_tags(conn, arn, tags)
        except IntegrityError:
            raise AlreadyExists(row["name"]) from None

    def _get(self, table: sa.Table, name: str) -> sa.RowMapping | None:
        with self.engine.connect() as conn:
            stmt = sa.select(table).where(table.c.key == _key(name))
            return conn.execute(stmt).mappings().first()

    def _delete(self, table: sa.Table, name: str, children: sa.Column | None = None) -> bool:
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(table.c.arn).where(table.c.key == _key(name))).first()
            if row is None:
                return False
            if children is not None:
                # Not left to ON DELETE CASCADE: a database may run with foreign keys off.
                conn.execute(sa.delete(children.table).where(children == _key(name)))
            conn.execute(sa.delete(table).where(table.c.key == _key(name)))
            conn.execute(sa.delete(tags_table).where(tags_table.c.resource_arn == row.arn))
            return True

    def _list(self, table: sa.Table, query: ListQuery) -> tuple[list[sa.RowMapping], Cursor | None]:
        columns = {"Name": table.c.name, "CreationTime": table.c.created_at}
        if "status" in table.c:
            columns["Status"] = table.c.status
        order = columns.get(query.sort_by, table.c.created_at)
        key = table.c.key
        stmt = sa.select(table)
        if query.name_contains:
            needle = query.name_contains.lower()
            stmt = stmt.where(key.contains(needle, autoescape=True))
        if query.created_before is not None:
            stmt = stmt.where(table.c.created_at < query.created_before)
        if query.created_after is not None:
            stmt = stmt.where(table.c.created_at > query.created_after)
        if "modified_at" in table.c:
            if query.modified_before is not None:
                stmt = stmt.where(table.c.modified_at < query.modified_before)
            if query.modified_after is not None:
                stmt = stmt.where(table.c.modified_at > query.modified_after)
        if query.status is not None and "status" in table.c:
            stmt = stmt.where(table.c.status == query.status)
        if query.after is not None:
            value, last = query.after
            if query.descending:
                stmt = stmt.where(sa.or_(order < value, sa.and_(order == value, key < last)))
            else:
                stmt = stmt.where(sa.or_(order > value, sa.and_(order == value, key > last)))
        if query.descending:
            stmt = stmt.order_by(order.desc(), key.desc())
        else:
            stmt = stmt.order_by(order.asc(), key.asc())
        limit = max(1, query.limit)
        with self.engine.connect() as conn:
            rows = list(conn.execute(stmt.limit(limit + 1)).mappings())
        if len(rows) <= limit:
            return rows, None
        rows = rows[:limit]
        last_row = rows[-1]
        return rows, (last_row[order.name], last_row["key"])


def _put_tags(conn: Connection, arn: str, tags: dict[str, str]) -> None:
    table = tags_table
    conn.execute(sa.delete(table).where(table.c.resource_arn == arn, table.c.key.in_(list(tags))))
    if tags:
        conn.execute(
            sa.insert(table), [{"resource_arn": arn, "key": k, "value": v} for k, v in tags.items()]
        )


def _model(row: sa.RowMapping) -> ModelRecord:
    return ModelRecord(row["name"], row["arn"], _load(row["spec"]), row["created_at"])


def _endpoint_config(row: sa.RowMapping) -> EndpointConfigRecord:
    return EndpointConfigRecord(row["name"], row["arn"], _load(row["spec"]), row["created_at"])


def _endpoint(row: sa.RowMapping) -> EndpointRecord:
    return EndpointRecord(
        name=row["name"],
        arn=row["arn"],
        config_name=row["config_name"],
        status=row["status"],
        created_at=row["created_at"],
        modified_at=row["modified_at"],
        failure_reason=row["failure_reason"],
        deployed_config_name=row["deployed_config_name"],
        deployment=_load(row["deployment"]),
        deployed_at=row["deployed_at"],
        pending_config_name=row["pending_config_name"],
        pending=_load(row["pending"]),
        pending_since=row["pending_since"],
        deployment_config=_load(row["deployment_config"]),
    )


def _instance(row: sa.RowMapping) -> InstanceRecord:
    return InstanceRecord(
        instance_id=row["instance_id"],
        endpoint_name=row["endpoint_name"],
        variant_name=row["variant_name"],
        state=row["state"],
        host=row["host"],
        port=row["port"],
        pid=row["pid"],
        secret=row["secret"],
        started_at=row["started_at"],
        detail=_load(row["detail"]) or {},
    )


def _create_engine(url: str) -> Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True)
    if parsed.database in (None, "", ":memory:"):
        # One shared connection: each pooled connection would otherwise be its own,
        # empty, in-memory database. Meant for tests: callers must not overlap.
        engine = sa.create_engine(
            parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Threads share the pool (the control plane calls in via asyncio.to_thread); the
        # timeout makes a writer wait for SQLite's lock instead of failing at once.
        engine = sa.create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()
