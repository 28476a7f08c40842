"""A conversation on one bidirectional stream, for the synchronous callers: the terminal
chat (``streamhost chat --bidi``) and the chat UI.

`BidiChannel` holds the stream (``streamhost.client.bidi``) on an event loop of its own
thread; `generate` sends a turn and returns a `BidiGeneration`, which reads like
``invocation.Generation``: iterate its text, ``stop`` it. Stopping interrupts the answer
on the same stream (``{"requestType": "INTERRUPT"}``): the model server stops generating,
the rest of the answer is read and dropped in the background, and the next turn waits for
that. The model server keeps the conversation's history for the stream's life, so each
turn is the new message only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from streamhost.client.bidi import open_bidi_stream

__all__ = ["BidiChannel", "BidiGeneration"]

Clock = Callable[[], float]
_DONE = object()


class BidiGeneration:
    """One answer on a bidirectional stream: iterate its text; ``stop`` interrupts it."""

    def __init__(self, channel: BidiChannel, started: float, clock: Clock) -> None:
        self._channel = channel
        self._pieces: queue.Queue[Any] = queue.Queue()
        self._clock = clock
        self.started = started
        self.first_text_at: float | None = None
        self.ended_at: float | None = None
        self.deltas = 0
        self.text = ""
        self.finished = False
        self.stopped = False

    def __iter__(self) -> Iterator[str]:
        while not self.stopped:
            piece = self._pieces.get()
            if piece is _DONE:
                self.finished = True
                self.ended_at = self._clock()
                return
            if isinstance(piece, BaseException):
                raise piece
            now = self._clock()
            if self.first_text_at is None:
                self.first_text_at = now
            self.deltas += 1
            self.text += piece
            self.ended_at = now
            yield piece

    @property
    def tokens(self) -> int:
        """Text pieces seen: one per token event."""
        return self.deltas

    @property
    def ttft(self) -> float | None:
        """Seconds from sending the turn to the first text, once it came."""
        return None if self.first_text_at is None else self.first_text_at - self.started

    @property
    def tokens_per_second(self) -> float | None:
        """Decode speed: tokens after the first, per second after the first."""
        if self.first_text_at is None or self.ended_at is None or self.deltas < 2:
            return None
        elapsed = self.ended_at - self.first_text_at
        return (self.deltas - 1) / elapsed if elapsed > 0 else None

    def stop(self) -> None:
        """Interrupt the answer now; the text so far is kept."""
        if self.finished or self.stopped:
            return
        self.stopped = True
        if self.ended_at is None:
            self.ended_at = self._clock()
        self._channel._interrupt()
        self._pieces.put(_DONE)


class BidiChannel:
    """One bidirectional stream to `endpoint` at the gateway `gateway_url` (credentials as
    ``load_credentials`` finds them; an https gateway's CA from ``AWS_CA_BUNDLE``)."""

    def __init__(self, gateway_url: str, endpoint: str) -> None:
        self.gateway_url, self.endpoint = gateway_url, endpoint
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="streamhost-bidi", daemon=True
        )
        self._thread.start()
        self._answering: concurrent.futures.Future[None] | None = None
        try:
            self._stream = self._run(
                open_bidi_stream(endpoint, gateway_url, ca_file=os.environ.get("AWS_CA_BUNDLE"))
            )
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def generate(self, body: bytes, *, clock: Clock = time.perf_counter) -> BidiGeneration:
        """Send one turn (a request body in the endpoint's API); its answer streams into
        the returned generation. A stopped answer before it is read to its end first."""
        if self._answering is not None:
            with contextlib.suppress(Exception):
                self._answering.result(timeout=30)
        generation = BidiGeneration(self, clock(), clock)

        async def answer() -> None:
            try:
                await self._stream.send(body.decode())
                async for text in self._stream.answer_text():
                    generation._pieces.put(text)
            except Exception as error:
                generation._pieces.put(error)
            generation._pieces.put(_DONE)

        self._answering = asyncio.run_coroutine_threadsafe(answer(), self._loop)
        return generation

    def _interrupt(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stream.interrupt(), self._loop)

    def close(self) -> None:
        """End the stream (the model server forgets the conversation) and the thread."""
        with contextlib.suppress(Exception):
            self._run(asyncio.wait_for(self._stream.aclose(), 10))
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()
