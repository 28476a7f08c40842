"""The gateway's own HTTP/1.1 client against real asyncio servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from streamhost.gateway.upstream import ConnectFailed, UpstreamBroken, UpstreamPool


class Server:
    """A raw HTTP/1.1 server on loopback whose answer each test writes by hand."""

    def __init__(self, answer) -> None:
        self.answer = answer  # async (reader, writer, request head, body) -> keep going?
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.base_events.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                if not await self.answer(reader, writer, head, body):
                    break
        writer.close()


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


async def post(pool: UpstreamPool, server: Server, body: bytes = b"{}", timeout: float = 5):
    headers = [(b"content-type", b"application/json"), (b"x-extra", b"1")]
    return await pool.post("127.0.0.1", server.port, "/invocations", headers, body, timeout=timeout)


async def collect(response, timeout: float = 5) -> list[bytes]:
    parts = []
    while chunk := await response.chunks(timeout):
        parts += chunk
    return parts


async def test_chunks_keep_their_boundaries_and_the_connection_is_reused():
    async def answer(reader, writer, head, body):
        writer.write(STREAM_HEAD)
        for part in (b"data: a\n\n", b"data: bb\n\n", b"data: ccc\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        return True

    pool = UpstreamPool()
    async with Server(answer) as server:
        for _ in range(3):
            response = await post(pool, server, b'{"inputs": "x"}')
            assert response.status == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert await collect(response) == [b"data: a\n\n", b"data: bb\n\n", b"data: ccc\n\n"]
            response.release()
        assert server.connections == 1
        head, body = server.requests[0]
        assert head.startswith(b"POST /invocations HTTP/1.1\r\n")
        assert b"\r\nx-extra: 1\r\n" in head and b"content-length: 15" in head
        assert body == b'{"inputs": "x"}'
    await pool.close()
    assert pool.stats() == {"open": 0, "idle": 0}


async def test_chunks_that_arrive_together_are_taken_together():
    async def answer(reader, writer, head, body):
        writer.write(STREAM_HEAD + chunked(b"one", b"two", b"three"))
        return True

    pool = UpstreamPool()
    async with Server(answer) as server:
        response = await post(pool, server)
        await asyncio.sleep(0.05)
        assert await response.chunks(5) == [b"one", b"two", b"three"]
        assert await response.chunks(5) == []
        response.release()
    await pool.close()


async def test_content_length_body_is_read_whole_or_cut_at_the_limit():
    async def answer(reader, writer, head, body):
        writer.write(b"HTTP/1.1 424 Failed\r\ncontent-length: 10\r\nx-a: 1\r\nx-a: 2\r\n\r\n")
        writer.write(b"0123456789")
        return True

    pool = UpstreamPool()
    async with Server(answer) as server:
        response = await post(pool, server)
        assert response.status == 424 and response.headers["x-a"] == "1, 2"
        assert await response.read(100, 5) == (b"0123456789", True)
        response.release()
        response = await post(pool, server)
        assert await response.read(4, 5) == (b"0123", False)
        response.close()  # cut short: the connection cannot be reused
        assert pool.stats()["idle"] == 0
    await pool.close()


async def test_a_pooled_connection_the_server_closed_is_replaced_without_an_error():
    async def answer(reader, writer, head, body):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        return False  # close after each answer, as a server whose keep-alive ran out

    pool = UpstreamPool()
    async with Server(answer) as server:
        for _ in range(3):
            response = await post(pool, server)
            assert await response.read(10, 5) == (b"ok", True)
            response.release()
            await asyncio.sleep(0.05)
        assert server.connections == 3
    await pool.close()


async def test_a_request_that_crossed_the_servers_close_is_sent_again_on_a_new_connection():
    # The server's keep-alive ran out just as the request went: it closes without reading
    # it. Nothing came back on a reused connection, so the pool retries on a fresh one.
    answered: set[asyncio.StreamWriter] = set()

    async def answer(reader, writer, head, body):
        if writer in answered:
            return False  # close, unanswered
        answered.add(writer)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        return True

    pool = UpstreamPool()
    async with Server(answer) as server:
        for _ in range(3):
            response = await post(pool, server)
            assert await response.read(10, 5) == (b"ok", True)
            response.release()
        assert server.connections == 3
        assert len(server.requests) == 5  # two were sent on a connection that then closed
    await pool.close()


async def test_nothing_listening_is_connect_failed():
    pool = UpstreamPool(connect_timeout=2)
    async with Server(None) as server:
        port = server.port
    with pytest.raises(ConnectFailed):
        await pool.post("127.0.0.1", port, "/invocations", [], b"", timeout=2)
    await pool.close()


async def test_a_connection_cut_mid_stream_gives_what_arrived_then_broken():
    async def answer(reader, writer, head, body):
        writer.write(STREAM_HEAD + b"3\r\nabc\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()
        return False

    pool = UpstreamPool()
    async with Server(answer) as server:
        response = await post(pool, server)
        parts = []
        with pytest.raises(UpstreamBroken):
            while chunk := await response.chunks(5):
                parts += chunk
        assert parts == [b"abc"]
        response.close()
    await pool.close()
    assert pool.stats() == {"open": 0, "idle": 0}


async def test_abort_interrupts_a_wait_at_once_and_silence_times_out():
    async def answer(reader, writer, head, body):
        writer.write(STREAM_HEAD + b"1\r\nx\r\n")
        await writer.drain()
        await asyncio.sleep(10)
        return False

    class Gone(Exception):
        pass

    pool = UpstreamPool()
    async with Server(answer) as server:
        response = await post(pool, server)
        assert await response.chunks(5) == [b"x"]
        with pytest.raises(asyncio.TimeoutError):
            await response.chunks(0.1)
        asyncio.get_running_loop().call_later(0.05, response.abort, Gone())
        with pytest.raises(Gone):
            await response.chunks(5)
        response.close()
    await pool.close()


async def test_headers_that_never_come_time_out_and_close_the_connection():
    async def answer(reader, writer, head, body):
        await asyncio.sleep(10)
        return False

    pool = UpstreamPool()
    async with Server(answer) as server:
        with pytest.raises(asyncio.TimeoutError):
            await post(pool, server, timeout=0.2)
    assert pool.stats() == {"open": 0, "idle": 0}
    await pool.close()


async def test_invalid_http_is_broken():
    async def answer(reader, writer, head, body):
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)
        return False

    pool = UpstreamPool()
    async with Server(answer) as server:
        with pytest.raises(UpstreamBroken):
            await post(pool, server)
    await pool.close()


async def test_a_reader_that_falls_behind_pauses_the_socket():
    sent = 0
    part = b"x" * 1000

    async def answer(reader, writer, head, body):
        nonlocal sent
        writer.write(STREAM_HEAD)
        with contextlib.suppress(ConnectionError):
            for _ in range(20_000):  # 20 MB if nothing pushed back
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                sent += len(part)
                await writer.drain()
        return False

    pool = UpstreamPool()
    async with Server(answer) as server:
        response = await post(pool, server)
        await asyncio.sleep(1.0)  # the reader takes nothing meanwhile
        # The client holds at most its high-water mark plus one read; the rest waits in the
        # kernel's socket buffers, and the server is held up in drain().
        assert response._buffered < 512 * 1024
        assert sent < 8 * 1024 * 1024
        taken = sum(map(len, await response.chunks(5)))
        assert taken > 0 and taken % len(part) == 0  # whole chunks only
        response.close()
    await pool.close()


def test_header_values_with_line_breaks_are_refused():
    async def attempt():
        pool = UpstreamPool()
        with pytest.raises(ValueError):
            await pool.post("127.0.0.1", 1, "/", [(b"x", b"a\r\nb: c")], b"", timeout=1)

    asyncio.run(attempt())
