"""A threaded stdlib HTTP server for tests that fake a peer on 127.0.0.1."""

from __future__ import annotations

import sys
import threading
from http.server import ThreadingHTTPServer


class LoopbackHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that serves on a thread and stays quiet when a client hangs up.

    A client that stops reading mid-response (as boto3 does after a ModelStreamError event) makes
    the handler's last write fail after the test has moved on; the stdlib would print that
    traceback into whichever test happens to be capturing stderr at the time.
    """

    daemon_threads = True

    def __init__(self, handler) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def start(self) -> LoopbackHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)
