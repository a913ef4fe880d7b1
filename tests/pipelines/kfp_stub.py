"""A real HTTP server on 127.0.0.1 that answers the Kubeflow Pipelines v2beta1 REST calls
``kfp.Client.create_run_from_pipeline_package`` makes, in the documented shapes
(``backend/api/v2beta1/{experiment,run}.proto``), and records every request."""

from __future__ import annotations

import json
import threading
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class KfpStub:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}

    def handle(self, method: str, path: str, query: dict, body: dict | None) -> tuple[int, dict]:
        self.requests.append({"method": method, "path": path, "query": query, "body": body})
        if path == "/apis/v2beta1/healthz":
            return 200, {"commit_sha": "stub", "tag_name": "2.5.0", "multi_user": False}
        if path == "/apis/v2beta1/experiments" and method == "GET":
            wanted = None
            flt = json.loads(query.get("filter", ["{}"])[0] or "{}")
            for pred in flt.get("predicates", []):
                if pred.get("key") in ("display_name", "name"):
                    wanted = pred.get("string_value") or pred.get("stringValue")
            found = [e for e in self.experiments.values()
                     if wanted is None or e["display_name"] == wanted]
            return 200, {"experiments": found, "total_size": len(found)} if found else {}
        if path == "/apis/v2beta1/experiments" and method == "POST":
            exp = {"experiment_id": str(uuid.uuid4()), "display_name": body["display_name"],
                   "created_at": "2026-11-25T00:00:00Z", "storage_state": "AVAILABLE"}
            self.experiments[exp["experiment_id"]] = exp
            return 200, exp
        if path == "/apis/v2beta1/runs" and method == "POST":
            run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING",
                   "created_at": "2026-11-25T00:00:00Z", "storage_state": "AVAILABLE"}
            self.runs[run["run_id"]] = run
            return 200, run
        if path.startswith("/apis/v2beta1/runs/") and method == "GET":
            run = self.runs.get(path.rsplit("/", 1)[-1])
            return (200, run) if run else (404, {"error": "run not found", "code": 5})
        return 404, {"error": f"no route {method} {path}", "code": 5}


@contextmanager
def kfp_stub_server():
    stub = KfpStub()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, payload = stub.handle(method, url.path, parse_qs(url.query), body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", stub
    finally:
        server.shutdown()
        server.server_close()
