"""A Prometheus Pushgateway stand-in for tests: a plain HTTP server on 127.0.0.1 that records
each ``PUT /metrics/job/<job>/<label>/<value>`` (path -> body), as the real one accepts them."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def pushgateway() -> Iterator[tuple[str, dict[str, str]]]:
    """``(host:port, pushed)``; ``pushed`` maps each PUT path to its body."""
    pushed: dict[str, str] = {}

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            pushed[self.path] = self.rfile.read(int(self.headers["content-length"])).decode()
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}", pushed
    finally:
        srv.shutdown()
        srv.server_close()
