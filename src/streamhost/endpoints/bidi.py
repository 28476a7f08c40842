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
from collections.abc import Iterator
from typing import Any

from streamhost.client.bidi import open_bidi_stream
from streamhost.endpoints.invocation import AnswerTimes, Clock

__all__ = ["BidiChannel", "BidiGeneration"]

_DONE = object()


class BidiGeneration(AnswerTimes):
    """One answer on a bidirectional stream: iterate its text; ``stop`` interrupts it."""

    def __init__(self, channel: BidiChannel, started: float, clock: Clock) -> None:
        super().__init__(started, clock)
        self._channel = channel
        self._pieces: queue.Queue[Any] = queue.Queue()

    def __iter__(self) -> Iterator[str]:
        while not self.stopped:
            piece = self._pieces.get()
            if piece is _DONE:
                if not self.stopped:
                    self._ended(stopped=False)
                return
            if isinstance(piece, BaseException):
                raise piece
            self._seen(piece)
            yield piece

    def stop(self) -> None:
        """Interrupt the answer now; the text so far is kept."""
        if self.finished or self.stopped:
            return
        self._ended(stopped=True)
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
