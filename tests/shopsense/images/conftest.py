"""Fixtures for the image tests: a real HTTP server on 127.0.0.1 and encoded sample images."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image


def png_bytes(
    size: tuple[int, int] = (8, 6), colour: tuple[int, int, int] = (200, 30, 40)
) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class ImageServer:
    """A local server; ``seen`` records (path, headers) of every request."""

    port: int
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def _handler(server_state: ImageServer, image: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _send(
            self,
            status: int,
            body: bytes = b"",
            headers: dict[str, str] | None = None,
            length: bool = True,
        ) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if length:
                self.send_header("Content-Length", str(len(body)))
            else:
                self.send_header("Connection", "close")
            self.end_headers()
            if body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            server_state.seen.append((self.path, dict(self.headers.items())))
            route = parts.path
            try:
                if route == "/img.png":
                    self._send(200, image, {"Content-Type": "image/png"})
                elif route == "/redirect":
                    self._send(int(query.get("status", "302")), headers={"Location": query["to"]})
                elif route == "/chain":  # /chain?n=3 → /chain?n=2 → … → /img.png
                    n = int(query["n"])
                    target = "/img.png" if n <= 1 else f"/chain?n={n - 1}"
                    self._send(302, headers={"Location": target})
                elif route == "/no-location":
                    self._send(302)
                elif route == "/big":
                    self._send(200, b"\0" * int(query["n"]))
                elif route == "/big-unsized":  # no Content-Length: body ends at close
                    self._send(200, headers={"Content-Type": "image/png"}, length=False)
                    chunk = b"\0" * 65536
                    for _ in range(int(query["n"]) // len(chunk) + 1):
                        self.wfile.write(chunk)
                    self.close_connection = True
                elif route == "/slow":
                    time.sleep(float(query.get("s", "3")))
                    self._send(200, image)
                elif route == "/trickle":  # headers at once, then one byte every 50 ms
                    self._send(200, headers={"Content-Length": "1000"}, length=False)
                    for _ in range(1000):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.05)
                elif route == "/stall":  # one byte after a pause, then silence
                    self._send(200, headers={"Content-Length": "1000"}, length=False)
                    time.sleep(float(query["after"]))
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(3)
                elif route == "/gzip":
                    self._send(200, image, {"Content-Encoding": "gzip"})
                else:
                    self._send(404, b"not found")
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    state = ImageServer(port=0)
    httpd = _Server(("127.0.0.1", 0), _handler(state, png_bytes()))
    state.port = httpd.server_address[1]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, list[str]]], list[str]]:
    """Map host names to addresses in ``socket.getaddrinfo``; other names resolve normally.
    Returns the list of looked-up names (one entry per lookup)."""
    import socket

    real = socket.getaddrinfo
    lookups: list[str] = []

    def install(table: dict[str, list[str]]) -> list[str]:
        def fake(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
            name = host.decode() if isinstance(host, bytes) else host
            if name in table:
                lookups.append(name)
                out = []
                for addr in table[name]:
                    if ":" in addr:
                        out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (addr, port, 0, 0)))
                    else:
                        out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, port)))
                return out
            return real(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", fake)
        return lookups

    return install
