"""Real servers on 127.0.0.1 for the API's abuse tests: the ASGI app on uvicorn (the same app
Ray Serve runs), and an image server whose answers can be held back."""

from __future__ import annotations

import http.server
import io
import socket
import threading
import time

import uvicorn
from PIL import Image


class LiveServer:
    """``app`` on uvicorn in a thread, on a free port of 127.0.0.1."""

    def __init__(self, app) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                                    timeout_keep_alive=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def jpeg_bytes(size=(32, 32), color=(10, 10, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


class HeldImageServer:
    """Serves a small JPEG at every path, but only once ``release`` is set (or ``hold_s`` has
    passed); counts connections at once (``peak``) and in all (``served``)."""

    def __init__(self, hold_s: float = 60.0) -> None:
        self.release = threading.Event()
        self.hold_s = hold_s
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.served = 0
        payload = jpeg_bytes()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                with outer.lock:
                    outer.active += 1
                    outer.peak = max(outer.peak, outer.active)
                try:
                    outer.release.wait(outer.hold_s)
                    self.send_response(200)
                    self.send_header("content-type", "image/jpeg")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the fetcher gave up and closed the socket
                finally:
                    with outer.lock:
                        outer.active -= 1
                        outer.served += 1

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> HeldImageServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
