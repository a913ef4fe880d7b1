"""Normal traffic under a flood of bad requests, through the real Ray Serve app on loopback.

    .venv/bin/python benchmarks/abuse.py [--model BUNDLE_OR_URI] [--seconds 30] [--repeats 3]

Starts ``shopsense serve --background`` (its own SHOPSENSE_HOME, the caller's registry), and
in one run, ``--repeats`` times each, alternates two phases of ``--seconds``:

* ``quiet``: normal traffic alone: ``--concurrency`` closed-loop clients sending short
  text-only reviews, every fifth with a small JPEG, to ``POST /v1/sentiment``;
* ``flood``: the same normal traffic while ``--flood-workers`` clients send bad requests as
  fast as the service answers them, in turn: a declared 40 MB body, a 3 MB chunked body over
  a 2 MB cap, a 300k-item batch, a 400000x1 PNG, a palette PNG over the pixel cap, a PNG
  whose text chunk inflates past Pillow's cap, a batch of 8 image URLs on a local server that
  holds every answer 30 s, a /v1/search query of one word 3,333 times, a lone surrogate.

It prints, per phase (medians over the repeats), the normal traffic's requests, p50 and p99
latency and non-2xx count; the flood's answers by kind and status; the number of 5xx in all;
and whether a Serve replica process was restarted (the replicas' process ids before and
after). Targets: flood p99 within 2x of quiet p99, zero 5xx, no restart. Every loop is
bounded in count and time; all traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import (  # noqa: E402
    REVIEWS,
    BenchError,
    fmt,
    host_info,
    log,
    percentile,
    process_tree,
    resolve_model,
    running_service,
)

HOLD_S = 30.0  # the slow image server holds each answer this long
MAX_BODY = 2_000_000  # the service's body cap for this run (SHOPSENSE_SERVE__MAX_BODY_BYTES)


def _jpeg(size=(96, 96)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (30, 140, 60)).save(buf, format="JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode()


def _png(size, mode="L", **save) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG", **save)
    return base64.b64encode(buf.getvalue()).decode()


def _ztxt_bomb() -> str:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * (40 << 20), zip=True)
    return _png((8, 8), "RGB", pnginfo=info)


class SlowImages:
    """An image server on 127.0.0.1 that holds every answer ``HOLD_S`` (the slow-URL abuse)."""

    def __init__(self) -> None:
        import http.server

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                time.sleep(HOLD_S)
                try:
                    self.send_response(404)
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.origin = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def abuse_cases(slow_origin: str) -> list[tuple[str, str, str, dict]]:
    """(kind, method, path, request kwargs) of the flood, sent in turn."""
    big_items = b'{"items": [' + b",".join([b"{}"] * 300_000) + b"]}"

    async def chunks():
        for _ in range(30):
            yield b" " * 100_000  # 3 MB, no Content-Length

    return [
        ("declared 40 MB body", "RAW", "/v1/sentiment", {"declared": 40_000_000}),
        ("chunked 3 MB body", "POST", "/v1/sentiment", {"content": chunks}),
        ("300k-item batch", "POST", "/v1/sentiment/batch", {"content": big_items}),
        ("400000x1 PNG", "POST", "/v1/sentiment", {"json": {"image": _png((400_000, 1))}}),
        ("palette PNG over the pixel cap", "POST", "/v1/sentiment",
         {"json": {"image": _png((9000, 9000), "P")}}),
        ("zTXt decompression bomb", "POST", "/v1/sentiment", {"json": {"image": _ztxt_bomb()}}),
        ("8 slow image URLs", "POST", "/v1/sentiment/batch",
         {"json": {"items": [{"image": f"http://{slow_origin}/{i}.jpg"} for i in range(8)]}}),
        ("repeated-term search", "POST", "/v1/search", {"json": {"query": "battery " * 3333}}),
        ("lone surrogate", "POST", "/v1/sentiment",
         {"content": b'{"text": "ok \\ud800 bad"}'}),
    ]


async def _normal(url: str, seconds: float, concurrency: int, max_requests: int) -> dict:
    import httpx

    photo = _jpeg()
    lat: list[float] = []
    codes: Counter = Counter()
    stop = time.monotonic() + seconds
    sent = 0

    async def client(i: int, c: httpx.AsyncClient) -> None:
        nonlocal sent
        n = i
        while time.monotonic() < stop and sent < max_requests:
            sent += 1
            body = {"text": REVIEWS[n % len(REVIEWS)]}
            if n % 5 == 0:
                body["image"] = photo
            n += concurrency
            t0 = time.perf_counter()
            try:
                r = await c.post(url + "/v1/sentiment", json=body)
                codes[r.status_code] += 1
            except httpx.HTTPError as exc:
                codes[type(exc).__name__] += 1
                continue
            lat.append((time.perf_counter() - t0) * 1000)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as c:
        await asyncio.gather(*(client(i, c) for i in range(concurrency)))
    ok = codes.get(200, 0)
    return {"requests": sum(codes.values()), "ok": ok, "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99), "errors": sum(codes.values()) - ok,
            "codes": {str(k): v for k, v in codes.items()}}


async def _declared_only(url: str, path: str, declared: int) -> int:
    """Send headers that declare a ``declared``-byte body and a few bytes of it (what a client
    that means to send 40 MB starts with); the status the service answers."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
                     f"\r\nContent-Length: {declared}\r\n\r\n{{}}".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 30)
        return int(line.split()[1])
    finally:
        writer.close()


async def _flood(url: str, seconds: float, workers: int, cases, max_requests: int) -> dict:
    import httpx

    out: Counter = Counter()
    stop = time.monotonic() + seconds
    sent = 0

    async def worker(i: int, c: httpx.AsyncClient) -> None:
        nonlocal sent
        n = i
        while time.monotonic() < stop and sent < max_requests:
            sent += 1
            kind, method, path, kw = cases[n % len(cases)]
            n += workers
            kw = dict(kw)
            if callable(kw.get("content")):
                kw["content"] = kw["content"]()
            kw.setdefault("headers", {})
            if "content" in kw:
                kw["headers"] = {"content-type": "application/json", **kw["headers"]}
            try:
                if method == "RAW":
                    status = await _declared_only(url, path, kw["declared"])
                else:
                    status = (await c.request(method, url + path, **kw)).status_code
                out[(kind, str(status))] += 1
            except Exception as exc:  # noqa: BLE001 - counted by kind, the flood goes on
                out[(kind, type(exc).__name__)] += 1

    async with httpx.AsyncClient(timeout=HOLD_S + 30) as c:
        await asyncio.gather(*(worker(i, c) for i in range(workers)))
    return {f"{k} -> {s}": v for (k, s), v in sorted(out.items())}


def _replicas(pid: int) -> dict[int, str]:
    """Serve replica processes of the service (pid -> title)."""
    out = {}
    for p in process_tree(pid):
        try:
            title = " ".join(p.cmdline())
        except Exception:  # noqa: BLE001 - gone
            continue
        if "ServeReplica" in title:
            # Ray titles a busy actor ray::<Class>.<running method>: the class only
            out[p.pid] = title.split()[0].split(".")[0]
    return out


def _same_replicas(before: dict, after: dict) -> bool:
    """The same replica processes (pid and deployment) before and after."""
    def norm(d):
        return {int(pid): title.split(".")[0] for pid, title in d.items()}
    return norm(before) == norm(after)


def run(args) -> dict:
    resolved, settings = resolve_model(args.model)
    slow = SlowImages()
    # the flood's slow URLs must be fetchable (an allow-listed origin), or they would only be
    # refused as loopback addresses and test nothing
    os.environ["SHOPSENSE_IMAGES__ALLOW_HOSTS"] = json.dumps([slow.origin])
    os.environ["SHOPSENSE_SERVE__MAX_BODY_BYTES"] = str(MAX_BODY)
    os.environ["SHOPSENSE_SERVE__RETRIEVAL"] = "false"
    cases = abuse_cases(slow.origin)
    phases: dict[str, list[dict]] = {"quiet": [], "flood": []}
    floods: list[dict] = []
    try:
        with running_service(str(resolved.bundle_dir), settings.tracking_uri(),
                             batching=True) as svc:
            before = _replicas(svc.pid)
            log(f"[abuse] service at {svc.url}, replicas {sorted(before.values())}")
            asyncio.run(_normal(svc.url, 5, args.concurrency, 10_000))  # warm-up
            for rep in range(args.repeats):
                log(f"[abuse] repeat {rep + 1}/{args.repeats}: quiet")
                phases["quiet"].append(asyncio.run(
                    _normal(svc.url, args.seconds, args.concurrency, args.max_requests)))
                log(f"[abuse] repeat {rep + 1}/{args.repeats}: flood")

                async def both():
                    return await asyncio.gather(
                        _normal(svc.url, args.seconds, args.concurrency, args.max_requests),
                        _flood(svc.url, args.seconds, args.flood_workers, cases,
                               args.max_requests))

                normal, flood = asyncio.run(both())
                phases["flood"].append(normal)
                floods.append(flood)
            after = _replicas(svc.pid)
    finally:
        slow.close()
    return {"machine": host_info(), "model": str(resolved.bundle_dir), "phases": phases,
            "floods": floods, "replicas_before": before, "replicas_after": after,
            "args": vars(args)}


def report(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140)
    m = result["machine"]
    console.print(f"machine: {m['cpu_model']}, {m['usable_cores']} usable cores, "
                  f"load average {m['loadavg_1m_start']} at the start (shared machine)")
    t = Table(title="normal traffic (POST /v1/sentiment), medians of "
                    f"{len(result['phases']['quiet'])} runs")
    for col in ("phase", "requests", "p50 ms", "p99 ms", "non-2xx", "p99 / quiet p99"):
        t.add_column(col, justify="right" if col != "phase" else "left")
    med = {}
    for phase, runs in result["phases"].items():
        med[phase] = {k: statistics.median(r[k] for r in runs)
                      for k in ("requests", "p50_ms", "p99_ms", "errors")}
    for phase in ("quiet", "flood"):
        row = med[phase]
        ratio = row["p99_ms"] / med["quiet"]["p99_ms"]
        t.add_row(phase, fmt(row["requests"], 0), fmt(row["p50_ms"]), fmt(row["p99_ms"]),
                  fmt(row["errors"], 0), fmt(ratio, 2))
    console.print(t)
    f = Table(title="the flood's answers (all runs)")
    f.add_column("bad request -> status")
    f.add_column("count", justify="right")
    total: Counter = Counter()
    for flood in result["floods"]:
        total.update(flood)
    for k, v in sorted(total.items()):
        f.add_row(k, str(v))
    console.print(f)
    fivexx = sum(v for k, v in total.items() if k.rsplit(" ", 1)[-1].startswith("5"))
    fivexx += sum(int(v) for runs in result["phases"].values() for r in runs
                  for c, v in r["codes"].items() if c.startswith("5"))
    restarted = not _same_replicas(result["replicas_before"], result["replicas_after"])
    targets = Table(title="targets")
    for col in ("target", "measured", "met"):
        targets.add_column(col)
    ratio = med["flood"]["p99_ms"] / med["quiet"]["p99_ms"]
    targets.add_row("flood p99 within 2x of quiet p99", f"{ratio:.2f}x",
                    "yes" if ratio <= 2 else "no")
    targets.add_row("zero 5xx (normal and flood)", str(fivexx), "yes" if fivexx == 0 else "no")
    targets.add_row("no replica restarted", "restarted" if restarted else
                    f"same {len(result['replicas_after'])} replica processes",
                    "no" if restarted else "yes")
    console.print(targets)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="models:/ URI or bundle dir (default: the "
                    "champion)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4, help="normal clients")
    ap.add_argument("--flood-workers", type=int, default=8)
    ap.add_argument("--max-requests", type=int, default=20_000,
                    help="cap on requests per client group and phase")
    ap.add_argument("--json", type=Path, default=None, help="write the raw figures here")
    ap.add_argument("--report", type=Path, default=None,
                    help="print the tables of figures a previous run wrote with --json")
    args = ap.parse_args()
    if args.report:
        report(json.loads(args.report.read_text()))
        return
    try:
        result = run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
    report(result)


if __name__ == "__main__":
    main()
