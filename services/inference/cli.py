"""``shopsense serve``, ``shopsense stop`` and ``shopsense demo``: the inference service's
sub-commands, registered on the root command through the ``shopsense.commands`` entry point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from shopsense.settings import get_settings


def _pidfile() -> Path:
    return get_settings().resolved_home() / "serve.pid"


def _wait_ready(url: str, proc: subprocess.Popen | None, timeout: float) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            r = httpx.get(f"{url}/readyz", timeout=5)
            if r.status_code == 200:
                return r.json()
            last = r.text[:200]
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(1.0)
    raise TimeoutError(f"not ready after {timeout:.0f}s: {last}")


def serve_cmd(
    host: Optional[str] = typer.Option(None, help="bind address (default 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, help="HTTP port (default 8000)"),
    model: Optional[str] = typer.Option(None, help="models:/name@alias, models:/name/N or a bundle dir"),
    backend: Optional[str] = typer.Option(None, help="torch (default) or vllm"),
    engine: Optional[str] = typer.Option(
        None, help="local (default: API, batcher and model in this process on uvicorn) or ray "
        "(the Ray Serve graph the chart deploys)"),
    batching: Optional[bool] = typer.Option(None, "--batching/--no-batching",
                                            help="dynamic request batching (default on)"),
    background: bool = typer.Option(False, "--background",
                                    help="start detached, wait until ready, print the URL"),
    ready_timeout: float = typer.Option(600, help="seconds to wait for readiness (--background)"),
) -> None:
    """Run the service on HOST:PORT: in one process (engine local) or as the Ray Serve graph
    (engine ray: FastAPI ingress, batching classifier, retriever)."""
    s = get_settings()
    over = {k: v for k, v in (("engine", engine), ("backend", backend),
                              ("batching", batching), ("model_uri", model)) if v is not None}
    if over:
        from pydantic import ValidationError

        try:
            serve_settings = type(s.serve).model_validate({**s.serve.model_dump(), **over})
        except ValidationError as exc:
            err = exc.errors()[0]
            typer.echo(f"error: --{err['loc'][0]}: {err['msg']}", err=True)
            raise typer.Exit(2) from None
        s = s.model_copy(update={"serve": serve_settings})
    host = host or s.serve.host
    port = port or s.serve.port
    url = f"http://{host}:{port}"
    if (backend or s.serve.backend) == "torch":
        # Fail fast, in one line, on a model that does not resolve (before Ray starts).
        from shopsense.registry import resolve

        resolve(s, model)
    from services.inference.guard import keyring_from_settings

    keyring = keyring_from_settings(s)  # and on an unreadable API keys file
    if keyring is not None:
        typer.echo(f"API keys on: {len(keyring.names)} keys from {keyring.path}", err=True)
    if background:
        argv = [sys.executable, "-c", "from shopsense.cli import main; main()", "serve",
                "--host", host, "--port", str(port)]
        for flag, val in (("--model", model), ("--backend", backend), ("--engine", engine)):
            if val:
                argv += [flag, val]
        if batching is not None:
            argv.append("--batching" if batching else "--no-batching")
        logf = s.resolved_home() / "serve.log"
        with logf.open("ab") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        _pidfile().write_text(str(proc.pid))
        typer.echo(f"starting the service (pid {proc.pid}, log {logf}) ...", err=True)
        try:
            info = _wait_ready(url, proc, ready_timeout)
        except (RuntimeError, TimeoutError) as exc:
            tail = logf.read_text(errors="replace").splitlines()[-15:]
            typer.echo("\n".join(tail), err=True)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            typer.echo(f"error: service failed to start: {exc}", err=True)
            raise typer.Exit(1) from exc
        typer.echo(f"ready: {url}  model {info['model']['name']} v{info['model']['version']}"
                   f"  (docs {url}/docs; stop with `shopsense stop`)")
        return

    if s.serve.engine == "local":
        _serve_local(s, host, port, url)
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from services.inference.app import AppArgs, build_app

    args = AppArgs(model_uri=model, backend=backend, batching=batching,
                   settings_env={k: v for k, v in os.environ.items()
                                 if k.startswith("SHOPSENSE_")})
    # Logical CPUs: the ingress takes none, the classifier one; Serve's own actors need room.
    ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False,
             configure_logging=False, log_to_driver=False)
    # No per-request access log: on a small machine it costs a measurable share of CPU.
    serve.start(http_options={"host": host, "port": port,
                              # a backstop behind the API's own deadline (serve.deadline_s)
                              "request_timeout_s": s.serve.request_timeout_s},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    serve.run(build_app(args), name="shopsense", route_prefix="/")
    typer.echo(f"serving on {url} (docs {url}/docs); Ctrl-C stops", err=True)
    stop = {"flag": False}

    def _stop(*_):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop["flag"]:
        time.sleep(0.5)
    serve.shutdown()
    ray.shutdown()


def _serve_local(s, host: str, port: int, url: str) -> None:
    """The ``local`` engine: the API, its batcher, the model and the retriever in this
    process, on uvicorn (SIGTERM and Ctrl-C stop it gracefully)."""
    import uvicorn

    from services.inference.local import build_local_app

    app = build_local_app(s)
    typer.echo(f"serving on {url} (docs {url}/docs; engine local); Ctrl-C stops", err=True)
    # No per-request access log: on a small machine it costs a measurable share of CPU.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=10)


def stop_cmd() -> None:
    """Stop a service started with `shopsense serve --background`."""
    pf = _pidfile()
    if not pf.exists():
        typer.echo("no background service recorded", err=True)
        return
    pid = int(pf.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pf.unlink(missing_ok=True)
        typer.echo(f"service pid {pid} was not running", err=True)
        return
    for _ in range(60):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        os.killpg(pid, signal.SIGKILL)
    pf.unlink(missing_ok=True)
    typer.echo(f"stopped service pid {pid}", err=True)


def demo_cmd(
    url: str = typer.Option("http://127.0.0.1:8000", help="the service"),
    as_json: bool = typer.Option(False, "--json", help="print raw answers"),
) -> None:
    """Send a few real requests (text only; text with a photo; photo only; a batch) and print
    the answers."""
    import base64
    import io

    import httpx
    from rich.console import Console
    from rich.table import Table

    from shopsense.images.render import PhotoSpec, render_photo

    def photo(**spec) -> str:
        buf = io.BytesIO()
        render_photo(PhotoSpec(**spec), seed=7).save(buf, format="JPEG", quality=90)
        return base64.b64encode(buf.getvalue()).decode()

    cracked = photo(category="phone", damage="cracked", packaging="none")
    pristine = photo(category="headphones", damage="none", packaging="intact")
    torn = photo(category="box", damage="none", packaging="torn")
    cases = [
        ("text only", {"text": "Battery lasts two days and the screen is gorgeous. Love it."}),
        ("text only", {"text": "Stopped charging after a week. Support never answered."}),
        ("text + photo (cracked phone)", {"text": "Arrived like this.", "image": cracked}),
        ("text + photo (pristine)", {"text": "Exactly as pictured, well packed.", "image": pristine}),
        ("photo only (torn packaging)", {"image": torn}),
        ("photo only (pristine)", {"image": pristine}),
    ]
    rows = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for name, body in cases:
            r = client.post("/v1/sentiment", json=body)
            rows.append((name, body.get("text") or "", r))
        batch = client.post("/v1/sentiment/batch", json={"items": [b for _, b in cases[:3]]})
        search = client.post("/v1/search", json={
            "query": "stopped working after a month", "k": 3,
            "filters": {"label": "negative"}})
    if as_json:
        typer.echo(json.dumps([r.json() for _, _, r in rows] + [batch.json(), search.json()],
                              indent=2))
        return
    t = Table(title=f"shopsense at {url}")
    for col in ("request", "text", "label", "neg / neu / pos", "modalities", "ms"):
        t.add_column(col, no_wrap=col != "text", max_width=34 if col == "text" else None)
    for name, text, r in rows:
        if r.status_code != 200:
            t.add_row(name, text, f"HTTP {r.status_code}", r.text[:60], "", "")
            continue
        p = r.json()
        sc = p["scores"]
        t.add_row(name, text, p["label"],
                  f"{sc['negative']:.2f} / {sc['neutral']:.2f} / {sc['positive']:.2f}",
                  "+".join(p["modalities"]), f"{p['latency_ms']:.0f}")
    # Wide enough for the table when the output is a file or a pipe (make, CI logs).
    Console(width=None if sys.stdout.isatty() else 130).print(t)
    if batch.status_code == 200:
        labels = [p["label"] for p in batch.json()["items"]]
        typer.echo(f"batch of 3 -> {labels}; model {rows[0][2].json()['model']}")
    else:
        typer.echo(f"batch -> HTTP {batch.status_code}: {batch.text[:200]}")

    def short(text: str, n: int = 90) -> str:
        text = " ".join(text.split())
        return text if len(text) <= n else text[: n - 1] + "…"

    name, text, r = rows[1]
    similar = r.json().get("similar", []) if r.status_code == 200 else []
    if similar:
        typer.echo(f"\nsimilar indexed reviews beside the answer to {short(text, 60)!r}:")
        for s in similar:
            typer.echo(f"  {s['score']:.4f}  {s['label'] or '-':8}  {short(s['text'])}")
    else:
        typer.echo("\nno similar reviews (nothing indexed: `shopsense index --data SET`)")
    if search.status_code == 200:
        typer.echo("\nPOST /v1/search 'stopped working after a month', label=negative:")
        for h in search.json()["hits"]:
            each = " ".join(f"{k}={'-' if v is None else f'{v:.3f}'}"
                            for k, v in h["scores"].items())
            typer.echo(f"  {h['score']:.4f} ({each})  {h['category'] or '-'}  "
                       f"{short(h['text'], 70)}")
    else:
        typer.echo(f"search -> HTTP {search.status_code}: {search.text[:200]}")
    typer.echo(f"\nweb page: {url}/  (paste a review or drop a photo; recent predictions by "
               f"category: {url}/ui/recent)")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
    app.command("stop")(stop_cmd)
    app.command("demo")(demo_cmd)
