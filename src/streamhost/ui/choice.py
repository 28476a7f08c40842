"""Which endpoints the chat UI offers: those that take invocations to choose from (InService,
or Updating while a scaling activity or an update runs), the others listed beside them with
their status (and, for a failed one, the cause of its failure), and what to say when the
endpoint a conversation was using goes away. Plain functions over `EndpointInfo`, without
Streamlit, so that they are tested as they are."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from streamhost.endpoints.discovery import EndpointInfo
from streamhost.endpoints.errors import short_reason

__all__ = ["EndpointChoice", "choose_endpoints", "markdown_text", "moved_notice", "not_ready_line"]

REASON_CHARS = 120
"""Characters of a failure's cause shown beside a failed endpoint (the sidebar is narrow)."""
# Characters Streamlit's Markdown would read as formatting (and `$` as LaTeX).
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$])")


@dataclass(frozen=True)
class EndpointChoice:
    """The endpoints the chat can talk to, and the ones it lists but cannot use yet."""

    ready: tuple[EndpointInfo, ...]
    not_ready: tuple[EndpointInfo, ...]

    @property
    def names(self) -> list[str]:
        """The names offered for chat, in the gateway's order."""
        return [info.name for info in self.ready]

    def index(self, preferred: str) -> int:
        """Where ``preferred`` is among `names` (the first, if it is not there)."""
        return self.names.index(preferred) if preferred in self.names else 0


def choose_endpoints(endpoints: Sequence[EndpointInfo]) -> EndpointChoice:
    """Split the gateway's endpoints into those that take invocations and the rest."""
    return EndpointChoice(
        ready=tuple(info for info in endpoints if info.serving),
        not_ready=tuple(info for info in endpoints if not info.serving),
    )


def not_ready_line(info: EndpointInfo) -> str:
    """An endpoint that takes no invocations, as the sidebar lists it (Markdown): its name, its
    status, and the cause of its failure, short."""
    line = f"**{markdown_text(info.name)}** · {info.status}"
    if info.failure_reason:
        line += f": {markdown_text(short_reason(info.failure_reason, REASON_CHARS))}"
    return line


def moved_notice(
    previous: str | None, endpoints: Sequence[EndpointInfo], chosen: str | None
) -> str | None:
    """What to tell the user when the endpoint their conversation used (``previous``) is no
    longer the one it goes to (``chosen``) without their choosing: it was deleted, or it no
    longer takes invocations. ``None`` when nothing moved."""
    if previous is None or chosen is None or previous == chosen:
        return None
    found = next((info for info in endpoints if info.name == previous), None)
    if found is not None and found.serving:
        return None  # still there: the user chose another one
    why = "no longer exists" if found is None else f"is {found.status}"
    return (
        f"Endpoint **{markdown_text(previous)}** {why}: the conversation now continues "
        f"with **{markdown_text(chosen)}**."
    )


def markdown_text(text: str) -> str:
    """``text`` escaped so that Streamlit's Markdown shows it as it is."""
    return _MARKDOWN.sub(r"\\\1", text)
