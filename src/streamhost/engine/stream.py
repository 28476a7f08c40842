"""The tokens of one request, as every engine hands them to the APIs.

An engine creates a :class:`RequestStream` when it accepts a request, puts each
:class:`TokenEvent` into it on the event loop that submitted the request, and is told
through two callbacks when the client stops listening (``cancel``) and when the stream
is over either way (``release``, exactly once). Nothing here knows which engine runs.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from streamhost.engine.types import TokenEvent


def _nothing() -> None:
    pass


class RequestStream:
    """The tokens of one request, as an async iterator; ``aclose()`` cancels it."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        prompt_ids: list[int],
        max_new_tokens: int,
        *,
        cancel: Callable[[], None] = _nothing,
        release: Callable[[], None] = _nothing,
    ) -> None:
        self.prompt_ids = prompt_ids  # the prompt as the engine tokenized (and truncated) it
        self.max_new_tokens = max_new_tokens  # the generation budget after defaults
        self._loop = loop
        self._cancel = cancel
        self._release_slot = release
        self._events: collections.deque[TokenEvent] = collections.deque()
        self._waiter: asyncio.Future | None = None
        self._done = False

    @property
    def input_length(self) -> int:
        """Number of prompt tokens."""
        return len(self.prompt_ids)

    def put(self, event: TokenEvent) -> None:
        """Deliver one event (call on the stream's event loop)."""
        self._events.append(event)
        if event.finish_reason is not None:
            self._release()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _release(self) -> None:
        if not self._done:
            self._done = True
            self._release_slot()

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> TokenEvent:
        while not self._events:
            if self._done:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self._events.popleft()
        if event.finish_reason is not None:
            # Nothing may follow the last event.
            self._events.clear()
        return event

    async def next_event(self, timeout: float | None = None) -> TokenEvent | None:
        """The next event, or ``None`` if none came within ``timeout`` seconds (keep-alive).

        Raises :class:`StopAsyncIteration` after the last event.
        """
        if not self._events:
            if self._done:
                raise StopAsyncIteration
            waiter = self._waiter = self._loop.create_future()
            timer = self._loop.call_later(timeout, _wake, waiter) if timeout else None
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if not self._events:
                if self._done:
                    raise StopAsyncIteration
                return None
        event = self._events.popleft()
        if event.finish_reason is not None:
            self._events.clear()
        return event

    def finished(self) -> bool:
        """True once the last event was delivered."""
        return self._done

    async def aclose(self) -> None:
        """Stop the request if it is still running (the client went away)."""
        self.close()

    def close(self) -> None:
        """Synchronous form of :meth:`aclose`."""
        if not self._done:
            self._cancel()
            self._release()

    async def __aenter__(self) -> RequestStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
