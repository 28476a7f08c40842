"""Which instance serves a runtime request: variant weights, least outstanding, sessions.

Routing state is plain data owned by the event loop (no locks, no I/O): the provisioner
publishes each endpoint's live instances by variant, the runtime plane asks `choose` for
an instance per request and `release`s it when the response is done. Choosing is
SageMaker's: `TargetVariant` if given, else a variant drawn by weight, then the instance
with the fewest requests in flight (round-robin among ties, or random with
`RoutingStrategy: RANDOM`). A sticky session goes to the instance that created it; if
that instance has stopped the request fails (`SessionGone`) rather than silently landing
on an instance that does not know the session.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

__all__ = [
    "NEW_SESSION",
    "EndpointNotFound",
    "Instance",
    "NoHealthyInstance",
    "Router",
    "RoutingError",
    "SessionGone",
    "UnknownVariant",
    "Variant",
    "parse_session_header",
]

NEW_SESSION = "NEW_SESSION"
# When a container names no expiry, a pin lasts this long after its last use (the
# container-standards library's default session TTL).
DEFAULT_SESSION_TTL = 20 * 60.0
# Expired pins are swept when the table grows past this; lookups drop them anyway.
_SWEEP_AT = 10_000
_EXPIRES = re.compile(r"expires\s*=\s*(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.\d+)?Z?", re.I)


class RoutingError(Exception):
    """Base class: no instance can be chosen for a request."""


class EndpointNotFound(RoutingError):
    """The endpoint has no published fleet (it does not exist or is not InService)."""


class NoHealthyInstance(RoutingError):
    """The endpoint exists but no instance that could take the request is up."""


class UnknownVariant(RoutingError):
    """`TargetVariant` names no variant of the endpoint."""


class SessionGone(RoutingError):
    """The session's instance has stopped; its state is lost with it."""

    def __init__(self, session_id: str) -> None:
        super().__init__(session_id)
        self.session_id = session_id


@dataclass(eq=False)
class Instance:
    """One model server as the router sees it: where it listens and how busy it is."""

    instance_id: str
    variant: str
    host: str
    port: int
    secret: str
    outstanding: int = 0
    up: bool = True  # takes new requests
    gone: bool = False  # stopped for good: its sessions are lost
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://{self.host}:{self.port}"


@dataclass(eq=False)
class Variant:
    """A production variant's routing weight and instances."""

    name: str
    weight: float = 1.0
    instances: list[Instance] = field(default_factory=list)
    random_routing: bool = False  # RoutingConfig.RoutingStrategy == RANDOM
    _turn: int = 0

    def pick(self, exclude: Collection[Instance]) -> Instance | None:
        """The instance to use: fewest outstanding requests, rotating among ties."""
        if len(self.instances) == 1:  # the usual endpoint: no lists to build
            only = self.instances[0]
            return only if only.up and only not in exclude else None
        candidates = [i for i in self.instances if i.up and i not in exclude]
        if not candidates:
            return None
        if self.random_routing:
            return random.choice(candidates)
        # Rotating the scan's starting point spreads sequential requests (all ties at 0)
        # over every instance instead of always picking the first.
        self._turn = (self._turn + 1) % len(candidates)
        rotated = candidates[self._turn :] + candidates[: self._turn]
        return min(rotated, key=lambda instance: instance.outstanding)

    def has_capacity(self, exclude: Collection[Instance]) -> bool:
        """Whether any instance of the variant could take a request."""
        return any(i.up and i not in exclude for i in self.instances)


@dataclass
class _Pin:
    instance: Instance
    endpoint: str
    expires_at: float
    ttl: float


def parse_session_header(value: str) -> tuple[str, float | None]:
    """`<id>; Expires=YYYY-MM-DDTHH:MM:SSZ` → (id, expiry as epoch seconds or None).

    Accepts a bare id, and an `Expires` it cannot read as no expiry; never raises.
    """
    session_id, _, rest = value.partition(";")
    match = _EXPIRES.search(rest)
    if match is None:
        return session_id.strip(), None
    try:
        moment = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return session_id.strip(), None
    return session_id.strip(), moment.replace(tzinfo=timezone.utc).timestamp()


class Router:
    """Routes of every endpoint and the sticky-session table (event-loop owned)."""

    def __init__(self, on_down: Callable[[Instance], None] | None = None) -> None:
        self._endpoints: dict[str, dict[str, Variant]] = {}
        self._names: dict[str, str] = {}  # lower-cased endpoint name → as published
        self._sessions: dict[str, _Pin] = {}
        self._on_down = on_down

    # -- fleets (the provisioner's side) --------------------------------------------------

    def publish(self, endpoint: str, variants: Iterable[Variant]) -> None:
        """Make `variants` the endpoint's routes at once (a new or replacement fleet)."""
        self._endpoints[endpoint.lower()] = {v.name.lower(): v for v in variants}
        self._names[endpoint.lower()] = endpoint

    def withdraw(self, endpoint: str) -> None:
        """Stop routing to the endpoint (it is being deleted)."""
        self._endpoints.pop(endpoint.lower(), None)
        self._names.pop(endpoint.lower(), None)

    def variants(self, endpoint: str) -> list[Variant]:
        """The endpoint's published variants (empty if none)."""
        return list(self._endpoints.get(endpoint.lower(), {}).values())

    def routes(self) -> list[tuple[str, list[Variant]]]:
        """(endpoint name, its variants) of every routed endpoint."""
        return [(self._names[key], list(v.values())) for key, v in self._endpoints.items()]

    def has_endpoint(self, endpoint: str) -> bool:
        """Whether the endpoint has a published fleet."""
        return endpoint.lower() in self._endpoints

    def add(self, endpoint: str, instance: Instance) -> None:
        """Add an instance (a replacement) to its variant, if the endpoint is still routed."""
        variant = self._endpoints.get(endpoint.lower(), {}).get(instance.variant.lower())
        if variant is not None and instance not in variant.instances:
            variant.instances.append(instance)

    def retire(self, instance: Instance) -> None:
        """Take an instance out for good: no new requests, and its sessions are lost."""
        instance.up = False
        instance.gone = True
        for variants in self._endpoints.values():
            variant = variants.get(instance.variant.lower())
            if variant is not None and instance in variant.instances:
                variant.instances.remove(instance)

    def mark_down(self, instance: Instance) -> None:
        """Stop sending new requests to an instance that failed one; tell the provisioner,
        which checks it and either brings it back (`mark_up`) or retires it."""
        if instance.up and not instance.gone:
            instance.up = False
            if self._on_down is not None:
                self._on_down(instance)

    def mark_up(self, instance: Instance) -> None:
        """An instance that was down passed its health check again."""
        if not instance.gone:
            instance.up = True

    def healthy_counts(self, endpoint: str) -> dict[str, int]:
        """Up instances per variant name."""
        return {
            v.name: sum(1 for i in v.instances if i.up)
            for v in self._endpoints.get(endpoint.lower(), {}).values()
        }

    def up_count(self, endpoint: str, variant: str) -> int:
        """Up instances of one variant (0 if it is not routed)."""
        variants = self._endpoints.get(endpoint.lower())
        found = None if variants is None else variants.get(variant.lower())
        if found is None:
            return 0
        count = 0
        for instance in found.instances:  # per request: no generator, no list
            if instance.up:
                count += 1
        return count

    # -- requests (the runtime's side) ----------------------------------------------------

    def choose(
        self,
        endpoint: str,
        *,
        target_variant: str | None = None,
        session_id: str | None = None,
        exclude: Collection[Instance] = (),
    ) -> Instance:
        """The instance for one request, already counted as outstanding; `release` it."""
        variants = self._endpoints.get(endpoint.lower())
        if variants is None:
            raise EndpointNotFound(endpoint)
        if session_id and session_id != NEW_SESSION:
            pinned = self._pinned(session_id, endpoint)
            if pinned is not None:
                pinned.outstanding += 1
                return pinned
        if target_variant is not None:
            variant = variants.get(target_variant.lower())
            if variant is None:
                raise UnknownVariant(target_variant)
            chosen = variant.pick(exclude)
        else:
            chosen = self._pick_weighted(list(variants.values()), exclude)
        if chosen is None:
            raise NoHealthyInstance(endpoint)
        chosen.outstanding += 1
        return chosen

    def release(self, instance: Instance) -> None:
        """The request `choose` counted on `instance` is finished."""
        instance.outstanding -= 1

    def pin(
        self, session_id: str, endpoint: str, instance: Instance, expires_at: float | None
    ) -> None:
        """Route later requests naming `session_id` to `instance` until the expiry."""
        now = time.time()
        if expires_at is not None and expires_at <= now:
            return  # already over: nothing to route
        ttl = DEFAULT_SESSION_TTL if expires_at is None else expires_at - now
        if len(self._sessions) >= _SWEEP_AT:
            self._sweep(now)
        self._sessions[session_id] = _Pin(instance, endpoint.lower(), now + ttl, ttl)

    def forget(self, session_id: str) -> None:
        """Drop a session (the container closed it)."""
        self._sessions.pop(session_id, None)

    def session_count(self) -> int:
        """Pinned sessions (expired ones may still be counted until looked up or swept)."""
        return len(self._sessions)

    def _pinned(self, session_id: str, endpoint: str) -> Instance | None:
        pin = self._sessions.get(session_id)
        if pin is None or pin.endpoint != endpoint.lower():
            # Unknown here: the container decides (it answers 400 for sessions it lacks).
            return None
        now = time.time()
        if pin.expires_at < now:
            del self._sessions[session_id]
            return None
        if pin.instance.gone:
            del self._sessions[session_id]
            raise SessionGone(session_id)
        if not pin.instance.up:
            # Down while the provisioner checks it: it may come back, with the session.
            raise NoHealthyInstance(endpoint)
        # Containers extend a session on each use; so does the pin.
        pin.expires_at = now + pin.ttl
        return pin.instance

    def _pick_weighted(
        self, variants: list[Variant], exclude: Collection[Instance]
    ) -> Instance | None:
        if len(variants) == 1:
            return variants[0].pick(exclude) if variants[0].weight > 0 else None
        live = [v for v in variants if v.weight > 0 and v.has_capacity(exclude)]
        if not live:
            return None
        variant = live[0] if len(live) == 1 else random.choices(live, [v.weight for v in live])[0]
        return variant.pick(exclude)

    def _sweep(self, now: float) -> None:
        for session_id in [s for s, pin in self._sessions.items() if pin.expires_at < now]:
            del self._sessions[session_id]
