"""``shopsense llm``: serve the offline LLM, check it, and fill the teacher-label cache."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer

log = logging.getLogger("shopsense.llm")

llm_app = typer.Typer(help="The LLM: the offline model's OpenAI-compatible server, its status "
                      "and its teacher labels.", no_args_is_help=True)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@llm_app.command("serve")
def serve_cmd(
    model: Optional[str] = typer.Option(None, help="embedded model key (see `llm status`)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8090, help="port to listen on"),
    threads: Optional[int] = typer.Option(None, help="CPU threads (default: all cores)"),
) -> None:
    """Run the embedded LLM behind an OpenAI-compatible API until Ctrl-C."""
    from shopsense.llm.server import EmbeddedServer
    from shopsense.llm.weights import LLMUnavailable, embedded_model
    from shopsense.settings import get_settings

    s = get_settings()
    try:
        m = embedded_model(model or s.llm.embedded_model)
        server = EmbeddedServer(m, host=host, port=port,
                                threads=threads if threads is not None else s.llm.threads,
                                context=s.llm.context, api_key=s.llm_api_key)
        ep = server.start()
    except LLMUnavailable as exc:
        _fail(str(exc), 1)
    typer.echo(f"serving {m.name} at {ep.base_url} (model {ep.model!r}); other commands use it "
               f"with SHOPSENSE_LLM_BASE_URL={ep.base_url} SHOPSENSE_LLM_MODEL={ep.model}; "
               f"Ctrl-C stops")
    stop = {"flag": False}

    def _stop(*_):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop["flag"] and server.alive():
            time.sleep(0.5)
    finally:
        died = not server.alive() and not stop["flag"]
        tail = server.log_tail() if died else ""
        server.stop()
    if died:
        _fail(f"the LLM server stopped: {tail}", 1)


@llm_app.command("status")
def status_cmd(
    verify: bool = typer.Option(False, help="also check each installed model's sha256"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """The embedded models (installed, verified), the runtime and the configured endpoint."""
    from shopsense.llm.server import runtime_available
    from shopsense.llm.weights import EMBEDDED, LLMUnavailable, installed, materialise
    from shopsense.settings import get_settings

    s = get_settings()
    out = {"runtime": runtime_available(), "endpoint": s.llm_base_url,
           "default": s.llm.embedded_model, "models": {}}
    for key, m in EMBEDDED.items():
        row = {"name": m.name, "installed": installed(m), "bytes": m.size,
               "sha256": m.sha256, "licence": m.licence}
        if verify and row["installed"]:
            try:
                row["path"] = str(materialise(m))
                row["verified"] = True
            except LLMUnavailable as exc:
                row["verified"] = False
                row["error"] = str(exc)
        out["models"][key] = row
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"runtime llama-cpp-python: {'installed' if out['runtime'] else 'missing'}; "
               f"endpoint: {s.llm_base_url or 'embedded server (started when needed)'}")
    for key, row in out["models"].items():
        state = "installed" if row["installed"] else "not installed (make llm)"
        if "verified" in row:
            state += ", verified" if row["verified"] else f", BAD: {row['error']}"
        mark = "*" if key == out["default"] else " "
        typer.echo(f"{mark} {key:38s} {row['bytes'] / 1e6:8.1f} MB  {state}")


@llm_app.command("label")
def label_cmd(
    sets: Optional[str] = typer.Option(None, help="comma-separated shared set names"),
    data: Optional[Path] = typer.Option(None, help="a JSONL file of reviews (text, title?)"),
    limit: Optional[int] = typer.Option(None, help="at most N texts per set (seeded sample)"),
    half: Optional[str] = typer.Option(None, help="a: the first, b: the second seeded half of "
                                       "each set (the cold-start split)"),
    seed: int = typer.Option(7, help="seed of the sample and of the halves"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON summary"),
) -> None:
    """Label texts with the LLM into the teacher-label cache (resumable: run it again after
    an interruption and it labels only what is missing)."""
    from shopsense.llm.teacher import label_into_cache, texts_for
    from shopsense.llm.weights import LLMUnavailable

    if not sets and not data:
        _fail("give --sets or --data")
    if half not in (None, "a", "b"):
        _fail("--half must be a or b")
    try:
        texts = texts_for(sets=[x.strip() for x in (sets or "").split(",") if x.strip()],
                          data=data, limit=limit, half=half, seed=seed)
        summary = label_into_cache(texts, progress=sys.stderr.isatty())
    except LLMUnavailable as exc:
        _fail(str(exc), 1)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(f"{summary['texts']} texts: {summary['cached_before']} already labelled, "
                   f"{summary['labelled']} labelled now in {summary['seconds']:.0f} s; the "
                   f"cache of {summary['teacher']} holds {summary['cache_size']} labels")


def register(app: typer.Typer) -> None:
    app.add_typer(llm_app, name="llm")
