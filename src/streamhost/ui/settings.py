"""The chat UI's configuration, set by its launcher (``streamhost ui``, ``up``) through the
environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from streamhost.endpoints.clients import (
    DEFAULT_ENDPOINT,
    DEFAULT_GATEWAY_URL,
    ENDPOINT_ENV,
    default_gateway_url,
)

__all__ = ["UISettings"]


@dataclass(frozen=True)
class UISettings:
    """The gateway the UI talks to and the endpoint it preselects."""

    gateway_url: str = DEFAULT_GATEWAY_URL
    endpoint: str = DEFAULT_ENDPOINT

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> UISettings:
        """``STREAMHOST_GATEWAY_URL`` and ``STREAMHOST_ENDPOINT``, with their defaults."""
        env = os.environ if environ is None else environ
        return cls(
            gateway_url=default_gateway_url(env),
            endpoint=env.get(ENDPOINT_ENV, "").strip() or DEFAULT_ENDPOINT,
        )
