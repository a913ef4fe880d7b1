"""The Grafana dashboards in charts/shopsense/dashboards and ``shopsense dashboards push``.

- Every panel query is real PromQL (parsed by ``promql-parser``, after Grafana's ``$__…``
  variables are given values) and names only metrics the code exports (the API's
  ``ApiMetrics`` and the pipeline's ``PipelineMetrics``, with a histogram's ``_bucket``,
  ``_count`` and ``_sum`` series and a counter's ``_total``), and only labels those metrics
  carry.
- ``push`` runs against a real HTTP server on 127.0.0.1 that implements the Grafana HTTP API
  endpoints it calls, as documented (folders, ``POST /api/dashboards/db``, search), with auth,
  and checks the request bodies. No real Grafana can be installed here (it is neither on PyPI,
  nor in Debian, nor on npm).
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from services.inference.metrics import RAY_PREFIX, RAY_SERVE_TAGS, ApiMetrics
from shopsense.dashboards import default_dir, load_dashboards, redact, register
from pipelines.metrics import PipelineMetrics
from tests.pushgateway import pushgateway

promql = pytest.importorskip("promql_parser", reason="pip install promql-parser (test extra)")

ROOT = Path(__file__).resolve().parents[3]
DASH_DIR = ROOT / "charts" / "shopsense" / "dashboards"


# ----------------------------------------------------------------------------- exported names

def _families(registry: CollectorRegistry, wrappers) -> dict[str, set[str]]:
    """Sample name -> label names, for every series a registry exposes."""
    labels = {w._name: set(w._labelnames) for w in wrappers}
    out: dict[str, set[str]] = {}
    for fam in registry.collect():
        base = fam.name
        if fam.type == "counter":
            names = {f"{base}_total": set()}
        elif fam.type == "histogram":
            names = {f"{base}_bucket": {"le"}, f"{base}_count": set(), f"{base}_sum": set()}
        else:
            names = {base: set()}
        own = labels.get(base, labels.get(f"{base}_total", set()))
        for n, extra in names.items():
            out[n] = own | extra
    return out


#: Labels the chart's PodMonitor puts on every series it scrapes from a Ray pod (the pod's
#: shopsense.io/* labels, and Prometheus' own namespace and pod).
POD_LABELS = {"namespace", "pod", "shopsense_io_sentimentmodel", "shopsense_io_track",
              "shopsense_io_model_version"}


def exported_metrics() -> dict[str, set[str]]:
    """The series the code exports: the API's (on ``/metrics``, and as ``ray_...`` through
    Ray's per-node agent in a cluster, with Serve's replica tags and the pod labels) and the
    pipeline's."""
    from prometheus_client.metrics import MetricWrapperBase

    api = ApiMetrics()
    pipe = PipelineMetrics("test")
    out = {}
    for obj in (api, pipe):
        wrappers = [v for v in vars(obj).values() if isinstance(v, MetricWrapperBase)]
        families = _families(obj.registry, wrappers)
        out.update(families)
        if obj is api:
            for name, labels in families.items():
                out[RAY_PREFIX + name] = labels | set(RAY_SERVE_TAGS) | POD_LABELS
    return out


def test_exported_names_follow_prometheus_conventions():
    names = exported_metrics()
    assert "shopsense_requests_total" in names and "shopsense_predictions_total" in names
    assert names["shopsense_predictions_total"] == {"label", "modalities", "category"}
    assert "shopsense_request_duration_seconds_bucket" in names
    assert names["shopsense_validation_samples_total"] == {"dataset", "category", "outcome"}
    assert "shopsense_validation_discriminator_auc" in names
    for name in names:
        assert re.fullmatch(r"(ray_)?shopsense_[a-z0-9_]+", name), name
        assert not name.endswith("_total_total")
    assert "shopsense_request_duration_seconds_sum" in names  # base unit in the name


# ----------------------------------------------------------------------------- PromQL

GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}


def to_promql(expr: str) -> str:
    """A Grafana panel expression as plain PromQL (its ``$__…`` durations given values)."""
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$__" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def query_names(expr: str) -> tuple[list[tuple[str, set[str]]], list[tuple[set[str], set[str]]]]:
    """The selectors of a PromQL expression as (metric, matcher labels), and its aggregations
    as (grouping labels, metrics below them)."""
    ast = promql.parse(to_promql(expr))
    selectors: list[tuple[str, set[str]]] = []
    groupings: list[tuple[set[str], set[str]]] = []

    def metrics_under(node) -> set[str]:
        found: set[str] = set()

        def visit(n):
            if isinstance(n, promql.VectorSelector):
                found.add(n.name)
        promql.walk(node, visit)
        return found

    def visit(n):
        if isinstance(n, promql.VectorSelector):
            assert n.name, f"a selector without a metric name in {expr!r}"
            selectors.append((n.name, {m.name for m in n.matchers.matchers}))
        elif isinstance(n, promql.AggregateExpr) and n.modifier is not None:
            groupings.append((set(n.modifier.labels), metrics_under(n.expr)))
        elif isinstance(n, promql.BinaryExpr) and n.modifier is not None \
                and n.modifier.matching is not None:
            groupings.append((set(n.modifier.matching.labels),
                              metrics_under(n.lhs) | metrics_under(n.rhs)))
    promql.walk(ast, visit)
    return selectors, groupings


def test_the_query_parser_finds_metrics_and_labels():
    sel, groups = query_names(
        'sum by (category, label) (rate(shopsense_predictions_total{category=~"$category"}'
        '[$__rate_interval])) / ignoring(label) group_left sum by (category) '
        '(rate(shopsense_predictions_total[$__rate_interval]))')
    assert sel == [("shopsense_predictions_total", {"category"}), ("shopsense_predictions_total",
                                                                  set())]
    assert ({"category", "label"}, {"shopsense_predictions_total"}) in groups
    assert ({"label"}, {"shopsense_predictions_total"}) in groups
    sel, _ = query_names("histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m]))) + time()")
    assert sel == [("x_bucket", set())]
    with pytest.raises(ValueError):
        query_names("sum(rate(x[5m])")


def panel_queries():
    for path, board in load_dashboards(DASH_DIR):
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield path.name, panel["title"], target["expr"]
        for var in board.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                yield path.name, f"variable {var['name']}", var["definition"]


def problems(expr: str, exported: dict[str, set[str]]) -> list[str]:
    """What is wrong with one panel or variable query: metrics the code does not export,
    labels those metrics do not carry."""
    m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", expr)
    if m:  # a template variable's query
        if m[1] not in exported:
            return [f"{m[1]} is not exported"]
        return [] if m[2] in exported[m[1]] else [f"{m[1]} has no label {m[2]}"]
    out = []
    selectors, groupings = query_names(expr)
    if not selectors:
        out.append("no metric")
    for name, matcher_labels in selectors:
        if name not in exported:
            out.append(f"{name} is not exported")
            continue
        unknown = matcher_labels - exported[name] - {"__name__"}
        if unknown:
            out.append(f"{name} has no label {sorted(unknown)}")
    for labels, metrics in groupings:
        known = set().union(*(exported.get(n, set()) for n in metrics))
        if not labels <= known:
            out.append(f"grouping by unknown {sorted(labels - known)}")
    return out


def test_the_check_catches_unknown_metrics_and_labels():
    exported = exported_metrics()
    assert problems("rate(shopsense_requests_total[5m])", exported) == []
    assert problems("rate(shopsense_request_total[5m])", exported) == [
        "shopsense_request_total is not exported"]
    assert problems('shopsense_model_info{colour="red"}', exported) == [
        "shopsense_model_info has no label ['colour']"]
    assert problems("sum by (le) (rate(shopsense_request_duration_seconds_count[5m]))",
                    exported) == ["grouping by unknown ['le']"]
    assert problems("sum by (le) (rate(shopsense_request_duration_seconds_bucket[5m]))",
                    exported) == []
    assert problems("label_values(shopsense_predictions_total, category)", exported) == []
    assert problems("label_values(shopsense_predictions_total, colour)", exported)
    assert problems("shopsense_predictions", exported)  # a counter's series end in _total


def test_every_panel_query_names_only_exported_metrics_and_their_labels():
    exported = exported_metrics()
    checked = 0
    for file, title, expr in panel_queries():
        assert problems(expr, exported) == [], f"{file}: {title}: {expr}"
        checked += 1
    assert checked >= 20


def test_dashboards_cover_what_the_issue_asks_for():
    boards = {b["uid"]: b for _, b in load_dashboards(DASH_DIR)}
    assert set(boards) == {"shopsense-inference", "shopsense-data-quality"}
    exprs = {uid: " ".join(t["expr"] for p in b["panels"] for t in p.get("targets", []))
             for uid, b in boards.items()}
    inference = exprs["shopsense-inference"]
    for needle in ("rate(ray_shopsense_requests_total", "histogram_quantile(0.99",
                   "shopsense_request_errors_total", "by (category, label)",
                   "shopsense_model_info", "shopsense_classifier_batch_size_bucket"):
        assert needle in inference, needle
    quality = exprs["shopsense-data-quality"]
    assert "shopsense_validation_samples_total" in quality
    assert "shopsense_validation_discriminator_auc" in quality


def test_the_inference_dashboard_reads_what_the_cluster_scrapes():
    """Ray's per-node export (each replica once), never the proxy's /metrics names."""
    board = next(b for _, b in load_dashboards(DASH_DIR) if b["uid"] == "shopsense-inference")
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            for name, _ in query_names(target["expr"])[0]:
                assert name.startswith(RAY_PREFIX), (panel["title"], name)


def test_the_error_ratio_panel_and_the_rollout_gate_agree():
    """Same series, same route and 5xx matchers; the panel only groups by track."""
    from operators.sentimentmodel.settings import OperatorSettings

    board = next(b for _, b in load_dashboards(DASH_DIR) if b["uid"] == "shopsense-inference")
    (panel,) = [p for p in board["panels"] if p["title"] == "Error ratio"]
    (target,) = panel["targets"]

    def matchers(expr):
        ast = promql.parse(to_promql(expr))
        found = []

        def visit(n):
            if isinstance(n, promql.VectorSelector):
                found.append((n.name, sorted((m.name, str(m.op), m.value)
                                             for m in n.matchers.matchers)))
        promql.walk(ast, visit)
        return found

    errors, requests = matchers(target["expr"])
    cfg = OperatorSettings(metrics_port=0)
    fields = dict(namespace="ns", name="m", track="canary", version="1", window="2m")
    (gate_errors,) = matchers(cfg.errors_query.format(**fields))
    (gate_requests,) = matchers(cfg.requests_query.format(**fields))
    scope = {"namespace", "shopsense_io_sentimentmodel", "shopsense_io_track"}

    def unscoped(sel):
        return sel[0], [m for m in sel[1] if m[0] not in scope]

    assert unscoped(gate_errors) == errors and unscoped(gate_requests) == requests
    assert ("code", str(errors[1][0][1]), "5..") in errors[1]


@pytest.mark.parametrize("path", sorted(DASH_DIR.glob("*.json")), ids=lambda p: p.name)
def test_dashboard_json_is_a_well_formed_grafana_model(path):
    board = json.loads(path.read_text())
    assert board["id"] is None and re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"])
    assert board["schemaVersion"] >= 36 and board["title"].startswith("shopsense")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
        if p["type"] in ("row", "text"):
            continue
        assert p["title"] and p.get("description"), p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))


# ----------------------------------------------------------------------------- pipeline metrics

def test_pipeline_metrics_textfile_and_pushgateway(tmp_path):
    m = PipelineMetrics("electronics-v3")
    m.record_samples("electronics", kept=812, rejected=188)
    m.record_discriminator_auc("electronics", 0.57)
    m.finish(when=1_700_000_000)
    with pytest.raises(ValueError):
        m.record_discriminator_auc("electronics", 1.5)
    with pytest.raises(ValueError):
        m.record_samples("electronics", kept=-1)
    out = m.write_textfile(tmp_path / "sub" / "validate.prom")
    text = out.read_text()
    assert ('shopsense_validation_samples_total{category="electronics",dataset="electronics-v3",'
            'outcome="rejected"} 188.0') in text
    assert 'shopsense_validation_discriminator_auc{category="electronics",dataset="electronics-v3"} 0.57' in text
    assert "shopsense_validation_last_success_timestamp_seconds" in text
    assert [p.name for p in out.parent.iterdir()] == ["validate.prom"]  # no temp file left

    # A Pushgateway is a plain HTTP server: PUT /metrics/job/<job>/dataset/<dataset>.
    with pushgateway() as (address, pushed):
        m.push(address)
    (path, body), = pushed.items()
    assert path == "/metrics/job/shopsense-validate/dataset/electronics-v3"
    assert "shopsense_validation_samples_total" in body


# ----------------------------------------------------------------------------- push

TOKEN = "glsa_test_token"
BASIC = ("admin", "s3cret")


class FakeGrafana(http.server.ThreadingHTTPServer):
    """The Grafana HTTP API endpoints `push` uses, as documented: auth (Bearer token or basic),
    ``GET /api/folders/:uid`` (404 when missing), ``POST /api/folders``,
    ``POST /api/dashboards/db`` (create or update by uid; 412 on an existing uid without
    ``overwrite``; 400 for an unknown folderUid), ``GET /api/search``. Records every request."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _GrafanaHandler)
        self.requests: list[dict] = []
        self.folders: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _GrafanaHandler(http.server.BaseHTTPRequestHandler):
    server: FakeGrafana

    def log_message(self, *a):
        pass

    def _send(self, status: int, body) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _authorized(self) -> bool:
        auth = self.headers.get("authorization", "")
        if auth == f"Bearer {TOKEN}":
            return True
        if auth.startswith("Basic "):
            user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            return (user, pw) == BASIC
        return False

    def _handle(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = None
        if raw:
            assert self.headers.get("content-type", "").startswith("application/json")
            body = json.loads(raw)
        self.server.requests.append({"method": method, "path": url.path, "body": body,
                                     "auth": self.headers.get("authorization")})
        if not self._authorized():
            return self._send(401, {"message": "Unauthorized"})
        s = self.server
        m = re.fullmatch(r"/api/folders/([^/]+)", url.path)
        if method == "GET" and m:
            f = s.folders.get(m[1])
            return self._send(200, f) if f else self._send(404, {"message": "folder not found",
                                                                "status": "not-found"})
        if method == "POST" and url.path == "/api/folders":
            if not isinstance(body, dict) or not body.get("title"):
                return self._send(400, {"message": "title required"})
            uid = body.get("uid") or f"auto{len(s.folders)}"
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid):
                return self._send(400, {"message": "uid contains illegal characters"})
            if uid in s.folders:
                return self._send(409, {"message": "a folder with the same uid already exists"})
            s.folders[uid] = {"id": len(s.folders) + 1, "uid": uid, "title": body["title"],
                              "url": f"/dashboards/f/{uid}/"}
            return self._send(200, s.folders[uid])
        if method == "POST" and url.path == "/api/dashboards/db":
            dash = (body or {}).get("dashboard")
            if not isinstance(dash, dict) or not dash.get("title"):
                return self._send(400, {"message": "Dashboard title cannot be empty",
                                        "status": "bad-request"})
            folder = body.get("folderUid")
            if folder and folder not in s.folders:
                return self._send(400, {"message": "folder not found"})
            uid = dash.get("uid")
            old = s.dashboards.get(uid)
            if old and not body.get("overwrite"):
                return self._send(412, {"message": "The dashboard has been changed by someone "
                                        "else", "status": "version-mismatch"})
            if dash.get("id") is not None and (not old or old["id"] != dash["id"]):
                return self._send(404, {"message": "Dashboard not found", "status": "not-found"})
            version = (old["version"] + 1) if old else 1
            slug = re.sub(r"[^a-z0-9]+", "-", dash["title"].lower()).strip("-")
            s.dashboards[uid] = {"id": old["id"] if old else len(s.dashboards) + 1, "uid": uid,
                                 "version": version, "folderUid": folder, "model": dash,
                                 "message": body.get("message")}
            return self._send(200, {"id": s.dashboards[uid]["id"], "uid": uid,
                                    "url": f"/d/{uid}/{slug}", "status": "success",
                                    "version": version, "slug": slug})
        if method == "GET" and url.path == "/api/search":
            return self._send(200, [{"uid": u, "title": d["model"]["title"], "type": "dash-db",
                                     "folderUid": d["folderUid"]}
                                    for u, d in s.dashboards.items()])
        return self._send(404, {"message": "Not found"})

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")


@pytest.fixture()
def grafana():
    srv = FakeGrafana()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def cli(monkeypatch):
    import typer

    for var in ("GRAFANA_URL", "GRAFANA_API_KEY", "GRAFANA_TOKEN", "GRAFANA_BASIC_AUTH"):
        monkeypatch.delenv(var, raising=False)
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    return lambda *args, env=None: runner.invoke(app, list(args), env=env)


def test_push_creates_the_folder_and_every_dashboard_then_updates_them(grafana, cli):
    r = cli("dashboards", "push", "--url", grafana.url, "--json",
            env={"GRAFANA_API_KEY": TOKEN})
    assert r.exit_code == 0, r.output
    results = json.loads(r.stdout)
    files = load_dashboards(DASH_DIR)
    assert {x["uid"] for x in results} == {b["uid"] for _, b in files}
    assert all(x["status"] == "success" and x["version"] == 1 for x in results)

    calls = [(q["method"], q["path"]) for q in grafana.requests]
    assert calls[:2] == [("GET", "/api/folders/shopsense"), ("POST", "/api/folders")]
    assert calls[2:] == [("POST", "/api/dashboards/db")] * len(files)
    assert grafana.requests[1]["body"] == {"title": "shopsense", "uid": "shopsense"}
    for q in grafana.requests:
        assert q["auth"] == f"Bearer {TOKEN}"
    for q, (_, model) in zip(grafana.requests[2:], files):
        body = q["body"]
        assert body["overwrite"] is True and body["folderUid"] == "shopsense"
        assert body["message"]
        assert body["dashboard"]["id"] is None
        assert body["dashboard"]["uid"] == model["uid"]
        assert body["dashboard"]["panels"] == model["panels"]  # the file, unchanged

    # Again: the folder exists, the dashboards are replaced in place (version 2).
    grafana.requests.clear()
    r = cli("dashboards", "push", "--url", grafana.url, "--json",
            env={"GRAFANA_API_KEY": TOKEN})
    assert r.exit_code == 0, r.output
    assert all(x["version"] == 2 for x in json.loads(r.stdout))
    first = grafana.requests[0]
    assert (first["method"], first["path"]) == ("GET", "/api/folders/shopsense")
    assert "POST /api/folders" not in {f"{q['method']} {q['path']}" for q in grafana.requests}
    assert len(grafana.dashboards) == len(files)

    # What Grafana now holds, read back with grafana-client's search.
    from grafana_client import GrafanaApi

    found = GrafanaApi.from_url(grafana.url, credential=TOKEN).search.search_dashboards()
    assert {d["uid"] for d in found} == {b["uid"] for _, b in files}
    assert {d["folderUid"] for d in found} == {"shopsense"}


def test_push_with_basic_auth_in_the_environment_and_the_general_folder(grafana, cli):
    r = cli("dashboards", "push", "--url", grafana.url, "--folder", "",
            env={"GRAFANA_BASIC_AUTH": "admin:s3cret"})
    assert r.exit_code == 0, r.output
    assert "success: shopsense-inference" in r.stdout
    assert {q["path"] for q in grafana.requests} == {"/api/dashboards/db"}
    assert all("folderUid" not in q["body"] for q in grafana.requests)
    assert grafana.requests[0]["auth"].startswith("Basic ")


def test_a_folder_title_with_spaces_gets_a_valid_uid(grafana, cli):
    r = cli("dashboards", "push", "--url", grafana.url, "--folder", "Shop Sense / prod",
            env={"GRAFANA_API_KEY": TOKEN})
    assert r.exit_code == 0, r.output
    assert grafana.folders == {"Shop-Sense-prod": {"id": 1, "uid": "Shop-Sense-prod",
                                                   "title": "Shop Sense / prod",
                                                   "url": "/dashboards/f/Shop-Sense-prod/"}}


def test_push_refused_credentials_is_a_clear_error(grafana, cli):
    r = cli("dashboards", "push", "--url", grafana.url, env={"GRAFANA_API_KEY": "wrong"})
    assert r.exit_code == 1
    assert "refused" in r.output and "GRAFANA_API_KEY" in r.output
    assert not grafana.dashboards
    r = cli("dashboards", "push", "--url", grafana.url, env={"GRAFANA_BASIC_AUTH": "nocolon"})
    assert r.exit_code == 2 and "user:password" in r.output


def test_push_to_nothing_listening_and_dry_run(cli, tmp_path):
    import socket

    with socket.socket() as s:  # a port with nothing behind it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("dashboards", "push", "--url", f"http://admin:pw@127.0.0.1:{port}", "--timeout", "3")
    assert r.exit_code == 1 and "could not reach Grafana" in r.output
    assert "pw@" not in r.output  # the password is not echoed
    r = cli("dashboards", "push", "--url", "http://unused.invalid", "--dry-run")
    assert r.exit_code == 0 and "would push shopsense-inference" in r.output
    (tmp_path / "bad.json").write_text("{not json")
    r = cli("dashboards", "push", "--url", "http://unused.invalid", "--dir", str(tmp_path))
    assert r.exit_code == 2 and "not valid JSON" in r.output


def test_redact_and_default_dir():
    assert redact("http://admin:pw@g:3000/sub") == "http://admin:***@g:3000/sub"
    assert redact("http://g:3000") == "http://g:3000"
    assert default_dir().resolve() == DASH_DIR.resolve()


def test_the_shopsense_command_has_the_dashboards_subcommand(grafana):
    """The real entry point: `shopsense dashboards push` in a subprocess, token from the env."""
    exe = Path(sys.executable).with_name("shopsense")
    if not exe.exists():
        pytest.skip("the shopsense command is not installed in this environment")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAFANA_")}
    env["GRAFANA_API_KEY"] = TOKEN
    p = subprocess.run([str(exe), "dashboards", "push", "--url", grafana.url],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
                       check=False)
    assert p.returncode == 0, p.stderr
    assert "success: shopsense-data-quality" in p.stdout
    assert set(grafana.dashboards) == {"shopsense-inference", "shopsense-data-quality"}
