"""Speed and memory of the shopsense classifier, in-process and through the real service.

    .venv/bin/python benchmarks/speed.py                      # everything, default sizes
    .venv/bin/python benchmarks/speed.py --load wrk --json out/speed.json
    .venv/bin/python benchmarks/speed.py --model /path/to/bundle --skip-http --repeats 2

What it measures, on this machine, in one run:

1. in-process throughput of ``Predictor.predict_proba`` (predictions/s), batch 1 and 32,
   text only (a ~20-word review) and text + image (a rendered 256x256 photo, decoded);
2. HTTP through the Ray Serve app started with ``shopsense serve --background`` (and stopped
   with ``shopsense stop``): requests/s, p50 and p99 latency and errors at concurrency 1, 8
   and 32, dynamic batching on and off, from a load generator in a separate process (an
   asyncio httpx client by default, ``wrk`` with ``--load wrk``);
3. peak RSS of the serving process tree (driver, raylet, GCS, Serve controller, proxy,
   replicas) sampled during the load, and its largest process (the classifier replica).

4. the text encoder's engines (``--engines``): in-process batch-1 and batch-32 throughput, and
   accuracy and agreement with the torch engine on the bundle's held-out sets;
5. side by side (``--side``): the plain FastAPI peer (``benchmarks/peer_app.py``) and
   ``shopsense serve`` on the ``local`` and ``ray`` engines with similar reviews off and on,
   and the response cache on a load with repeats, one server at a time under the same load
   generator; every row as a ratio to the peer and to in-process, with the load generator's
   CPU. (Section 2 runs ``shopsense serve`` on its default engine.)

Every figure is the median of ``--repeats`` runs; ratios are against baselines measured in the
same run. Nothing here asserts on timings: the script prints tables, a "targets" table (met, or
missed by how much) and, with ``--json OUT``, the raw figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# the harness the benchmark scripts share (this folder is not a package: scripts run as files)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import GIB, BenchError, fmt, host_info, log, median, percentile  # noqa: E402, F401

# Short, real-looking reviews (~20 words each); requests and batches cycle through them.
REVIEWS: tuple[str, ...] = (
    "Battery easily lasts two days and the screen is bright and sharp. Setup took five minutes. Really happy with it.",
    "Stopped charging after a week and support never answered my emails. Returned it for a refund, very disappointed.",
    "Sound quality is decent for the price, but the ear cushions feel cheap and started peeling within a month.",
    "Arrived on time, well packed, exactly as pictured. The colour matches the photos and it feels solid in the hand.",
    "The box was crushed and the mug inside had a chip on the rim. Replacement came quickly though, so three stars.",
    "Does what it says. Nothing special, nothing wrong. The manual is thin but the app explains everything you need.",
    "Terrible fit, the left shoe is noticeably tighter than the right one. Cheap glue visible along the sole. Avoid.",
    "Great little laptop for school work: light, quiet, keyboard is comfortable and the battery gets me through the day.",
)

TARGET_HTTP_RATIO = 0.8  # HTTP rps at c=32 with batching / in-process batch-32 predictions/s
TARGET_P50_C1_MS = 30.0  # p50 latency at concurrency 1 (batching on)
TARGET_RSS_GIB = 2.5  # peak RSS summed over the serving process tree


# ------------------------------------------------------------------------------------------
# helpers


def machine_info() -> dict[str, Any]:
    import torch

    return {**host_info(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__}


def resolve_model(uri: str | None):
    """``ResolvedModel`` for a ``models:/`` URI or a bundle directory, else ``BenchError``."""
    from shopsense.errors import ModelNotFound
    from shopsense.registry import resolve
    from shopsense.settings import Settings

    settings = Settings()
    uri = uri or settings.default_model_uri()
    if not uri.startswith("models:/"):
        if not (Path(uri) / "shopsense_model.json").is_file():
            raise BenchError(f"--model {uri}: neither a models:/ URI nor a model bundle "
                             f"directory (no shopsense_model.json there)")
        uri = str(Path(uri).resolve())
    try:
        return resolve(settings, uri), settings
    except ModelNotFound as exc:
        raise BenchError(
            f"no model to benchmark: {exc}. Create one with `make demo` or `shopsense train`, "
            f"or pass --model BUNDLE_DIR"
        ) from exc


def sample_photo():
    """A procedurally rendered 256x256 product photo, JPEG-encoded and decoded as the API does."""
    import io

    from shopsense.images import decode_image
    from shopsense.images.render import PhotoSpec, render_photo

    buf = io.BytesIO()
    render_photo(PhotoSpec(category="phone", damage="cracked", packaging="torn"), seed=7,
                 size=(256, 256)).save(buf, format="JPEG", quality=90)
    return decode_image(buf.getvalue(), max_bytes=8 * 1024 * 1024, max_pixels=40_000_000)


# ------------------------------------------------------------------------------------------
# 1. in-process throughput


def bench_inprocess(
    predictor,
    *,
    batch_sizes: Sequence[int] = (1, 32),
    modes: Sequence[str] = ("text", "text+image"),
    repeats: int = 5,
    items: int = 64,
    warmup: int = 3,
) -> list[dict[str, Any]]:
    """Predictions/s of ``predictor.predict_proba`` per (mode, batch size).

    Each run makes ``ceil(items / batch)`` calls (at least 2) and counts items per second; the
    figure is the median over ``repeats`` runs, after ``warmup`` untimed calls.
    """
    image = sample_photo() if "text+image" in modes else None
    results = []
    for mode in modes:
        for b in batch_sizes:
            texts = [REVIEWS[i % len(REVIEWS)] for i in range(b)]
            images = [image] * b if mode == "text+image" else None
            for _ in range(max(0, warmup)):
                predictor.predict_proba(texts, images)
            calls = max(2, math.ceil(items / b))
            runs = []
            for r in range(repeats):
                t0 = time.perf_counter()
                for _ in range(calls):
                    predictor.predict_proba(texts, images)
                dt = time.perf_counter() - t0
                runs.append({"calls": calls, "items": calls * b, "seconds": dt,
                             "items_per_s": calls * b / dt, "ms_per_call": dt / calls * 1000})
                log(f"[in-process] {mode:10s} batch {b:3d} run {r + 1}/{repeats}: "
                    f"{runs[-1]['items_per_s']:.1f} pred/s")
            results.append({
                "mode": mode, "batch": b, "runs": runs,
                "items_per_s": median([x["items_per_s"] for x in runs]),
                "ms_per_call": median([x["ms_per_call"] for x in runs]),
            })
    for row in results:  # baseline: batch 1 of the same mode, same run
        base = next((x for x in results if x["mode"] == row["mode"] and x["batch"] == 1), None)
        row["speedup_vs_batch1"] = row["items_per_s"] / base["items_per_s"] if base else None
    return results


# ------------------------------------------------------------------------------------------
# 2. the service: start/stop through the project CLI, memory of its process tree


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_argv() -> list[str]:
    exe = Path(sys.executable).with_name("shopsense")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from shopsense.cli import main; main()"]


@dataclass
class Service:
    url: str
    pid: int
    home: Path
    env: dict[str, str]
    model: str
    startup_s: float
    procs: dict[int, Any] = field(default_factory=dict)  # pid -> psutil.Process, seen in the tree


@contextmanager
def running_service(model_uri: str, tracking_uri: str, *, batching: bool,
                    host: str = "127.0.0.1", ready_timeout: float = 600,
                    engine: str | None = None,
                    env_extra: dict[str, str] | None = None) -> Iterator[Service]:
    """``shopsense serve --background`` with its own SHOPSENSE_HOME (so its pid file never
    touches a service the user runs) and the caller's registry; ``shopsense stop`` after.
    ``engine`` is ``local`` or ``ray`` (default: the setting's); ``env_extra`` adds
    ``SHOPSENSE_*`` variables (similar reviews, cache, index folder)."""
    home = Path(tempfile.mkdtemp(prefix="shopsense-bench-"))
    env = {**os.environ, "SHOPSENSE_HOME": str(home),
           "SHOPSENSE_MLFLOW_TRACKING_URI": tracking_uri, "RAY_USAGE_STATS_ENABLED": "0",
           **(env_extra or {})}
    port = free_port()
    argv = [*_cli_argv(), "serve", "--background", "--host", host, "--port", str(port),
            "--model", model_uri, "--batching" if batching else "--no-batching",
            "--ready-timeout", str(int(ready_timeout))]
    if engine:
        argv += ["--engine", engine]
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, check=False, capture_output=True, text=True, timeout=ready_timeout + 60)
    startup = time.perf_counter() - t0
    pidfile = home / "serve.pid"
    if p.returncode != 0 or "ready:" not in p.stdout:
        detail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        _stop_service(env, None)
        raise BenchError(f"`shopsense serve --background --model {model_uri}` "
                         f"({'batching' if batching else 'no batching'}) did not start: "
                         f"{detail} [log: {home / 'serve.log'}]")
    ready_line = next(ln for ln in p.stdout.splitlines() if ln.startswith("ready:"))
    svc = Service(url=f"http://{host}:{port}", pid=int(pidfile.read_text()), home=home, env=env,
                  model=ready_line.split("model", 1)[-1].split("(")[0].strip(),
                  startup_s=startup)
    try:
        yield svc
    finally:
        _stop_service(env, svc)
        shutil.rmtree(home, ignore_errors=True)


def _stop_service(env: dict[str, str], svc: Service | None) -> None:
    import psutil

    subprocess.run([*_cli_argv(), "stop"], env=env, check=False, capture_output=True, text=True, timeout=120)
    if svc is None:
        return
    # Processes of this service's tree that outlived `shopsense stop`: ours, ended one by one
    # (psutil.Process checks the creation time, so a reused pid is never signalled).
    deadline = time.monotonic() + 15
    left = [p for p in svc.procs.values() if p.is_running()]
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = [p for p in left if p.is_running()]
    for p in left:
        try:
            p.terminate()
        except psutil.Error:
            pass
    if left:
        log(f"[http] ended {len(left)} leftover process(es) of the service by pid")


def process_tree(pid: int) -> list:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _proc_label(p) -> str:
    try:
        cmd = p.cmdline()
        label = " ".join(cmd) if cmd else p.name()
    except Exception:  # noqa: BLE001 - the process may have gone
        label = "?"
    label = label.strip()
    if label.startswith("ray::"):  # Ray titles actors ray::<Class>[.<running method>]
        return label.split()[0].split(".")[0]
    if "shopsense" in label and "serve" in label:
        return "serve driver (shopsense serve)"
    words = label.split()
    if not words:
        return "?"
    if Path(words[0]).name.startswith("python"):  # name a Python process by its script/module
        rest = words[1:]
        if rest[:1] == ["-m"] and len(rest) > 1:
            return rest[1]
        script = next((w for w in rest if not w.startswith("-")), None)
        if script:
            return Path(script).name
    return Path(words[0]).name


def tree_cpu_times(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of every process in the tree, by pid, with a label."""
    out = {}
    for p in process_tree(pid):
        try:
            t = p.cpu_times()
            out[p.pid] = (_proc_label(p), t.user + t.system)
        except Exception:  # noqa: BLE001, S112 - gone / no access
            continue
    return out


def cpu_share(before: dict, after: dict, wall: float) -> dict[str, Any]:
    """CPU used by the service between two ``tree_cpu_times`` snapshots, in % of one core."""
    used: dict[str, float] = {}
    for pid, (label, t1) in after.items():
        t0 = before.get(pid, (label, 0.0))[1]
        used[label] = used.get(label, 0.0) + max(0.0, t1 - t0)
    total = sum(used.values())
    top = max(used.items(), key=lambda kv: kv[1]) if used else ("-", 0.0)
    replica = sum(v for k, v in used.items() if ":Classifier" in k)
    return {"server_cpu_pct": 100 * total / wall if wall else float("nan"),
            "replica_cpu_pct": 100 * replica / wall if wall else float("nan"),
            "busiest_process": top[0],
            "busiest_cpu_pct": 100 * top[1] / wall if wall else float("nan")}


class MemorySampler:
    """Samples RSS over the process tree of ``pid`` every ``interval`` s in a thread."""

    def __init__(self, svc: Service, interval: float = 0.5) -> None:
        self.svc = svc
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self.peak_total = 0
        self.peak_single = 0
        self.peak_single_label = ""
        self.peak_procs = 0
        self.peak_breakdown: dict[str, int] = {}
        self._labels: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, Any]:
        total, biggest, label, n = 0, 0, "", 0
        breakdown: dict[str, int] = {}
        for p in process_tree(self.svc.pid):
            try:
                rss = p.memory_info().rss
                name = self._labels.get(p.pid) or self._labels.setdefault(p.pid, _proc_label(p))
            except Exception:  # noqa: BLE001, S112 - NoSuchProcess / AccessDenied
                continue
            self.svc.procs.setdefault(p.pid, p)
            n += 1
            total += rss
            breakdown[name] = breakdown.get(name, 0) + rss
            if rss > biggest:
                biggest, label = rss, name
        s = {"t": time.time(), "total": total, "procs": n, "largest": biggest,
             "largest_label": label}
        self.samples.append(s)
        if total > self.peak_total:
            self.peak_total, self.peak_procs, self.peak_breakdown = total, n, breakdown
        if biggest > self.peak_single:
            self.peak_single, self.peak_single_label = biggest, label
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> MemorySampler:  # noqa: PYI034
        self.idle = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def summary(self) -> dict[str, Any]:
        return {"idle_total_bytes": self.idle["total"], "peak_total_bytes": self.peak_total,
                "peak_processes": self.peak_procs, "largest_bytes": self.peak_single,
                "largest_process": self.peak_single_label,
                "peak_breakdown_bytes": dict(sorted(self.peak_breakdown.items(),
                                                    key=lambda kv: -kv[1])),
                "samples": len(self.samples)}


# ------------------------------------------------------------------------------------------
# 2b. load generators (each in its own process)


def request_bodies(unique: bool = False) -> list[str]:
    """The request bodies a load cycles through: the eight reviews (a load with repeats), or
    with ``unique`` 50,000 distinct texts (each review with its own order number: no two
    requests of a run are the same, so a response cache never hits)."""
    if not unique:
        return [json.dumps({"text": t}) for t in REVIEWS]
    return [json.dumps({"text": f"{REVIEWS[i % len(REVIEWS)]} Order {i}."})
            for i in range(50_000)]


async def _httpx_load(url: str, bodies: list[str], concurrency: int, seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors = {"count": 0, "kinds": {}}
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    encoded = [b.encode() for b in bodies]
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:
        deadline = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            i = k
            while time.perf_counter() < deadline:
                body = encoded[i % len(encoded)]
                i += concurrency
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/sentiment", content=body, headers=headers)
                    ok, kind = r.status_code == 200, f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    ok, kind = False, type(exc).__name__
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors["count"] += 1
                    errors["kinds"][kind] = errors["kinds"].get(kind, 0) + 1

        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    ms = [x * 1000 for x in latencies]
    return {"requests": len(ms), "errors": errors["count"], "error_kinds": errors["kinds"],
            "seconds": elapsed, "rps": len(ms) / elapsed if elapsed else 0.0,
            "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
            "mean_ms": statistics.fmean(ms) if ms else float("nan"),
            "max_ms": max(ms) if ms else float("nan"), "loadgen_cpu_s": cpu}


def loadgen_child(spec: dict) -> dict:
    """Body of the load-generator process: a warm-up, then ``repeats`` timed runs."""
    if spec.get("unique"):
        spec = {**spec, "bodies": request_bodies(unique=True)}

    async def main() -> dict:
        if spec["warmup"] > 0:
            await _httpx_load(spec["url"], spec["bodies"], spec["concurrency"], spec["warmup"])
        runs = []
        for _ in range(spec["repeats"]):
            runs.append(await _httpx_load(spec["url"], spec["bodies"], spec["concurrency"],
                                          spec["seconds"]))
        return {"runs": runs}

    return asyncio.run(main())


WRK_LUA = """
local bodies = {%s}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, "/v1/sentiment", nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%.0f, "duration_us": %%.0f, "connect": %%.0f, "read": %%.0f, ' ..
    '"write": %%.0f, "status": %%.0f, "timeout": %%.0f, "p50_us": %%.1f, "p99_us": %%.1f, ' ..
    '"mean_us": %%.1f, "max_us": %%.1f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""


def _wrk_run(wrk: str, script: Path, url: str, concurrency: int, seconds: float) -> dict:
    threads = max(1, min(concurrency, os.cpu_count() or 1))
    argv = [wrk, "-t", str(threads), "-c", str(concurrency), "-d", f"{max(1, round(seconds))}s",
            "--timeout", "60s", "-s", str(script), url]
    p = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=seconds + 120)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if p.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-300:]}")
    w = json.loads(line[len("WRKJSON "):])
    secs = w["duration_us"] / 1e6
    errors = int(w["connect"] + w["read"] + w["write"] + w["status"] + w["timeout"])
    ok = max(0, int(w["requests"]) - int(w["status"]))
    return {"requests": ok, "errors": errors,
            "error_kinds": {k: int(w[k]) for k in ("connect", "read", "write", "status",
                                                     "timeout") if w[k]},
            "seconds": secs, "rps": ok / secs if secs else 0.0,
            "p50_ms": w["p50_us"] / 1000, "p99_ms": w["p99_us"] / 1000,
            "mean_ms": w["mean_us"] / 1000, "max_ms": w["max_us"] / 1000}


def run_load(url: str, *, concurrency: int, seconds: float, warmup: float, repeats: int,
             tool: str = "httpx", unique: bool = False) -> dict[str, Any]:
    """Warm-up, then ``repeats`` runs of ``seconds`` at ``concurrency``, in another process.

    Returns per-run figures, their medians and the load generator's CPU share (a load
    generator near 100% of a core is itself a bottleneck)."""
    bodies = request_bodies()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    if tool == "wrk" and unique:
        raise BenchError("--load wrk sends the eight fixed bodies only; the side-by-side "
                         "comparison needs distinct bodies: use --load httpx")
    if tool == "wrk":
        wrk = shutil.which("wrk")
        if wrk is None:
            raise BenchError("wrk is not installed (apt-get install -y wrk), use --load httpx")
        with tempfile.TemporaryDirectory(prefix="shopsense-wrk-") as tmp:
            script = Path(tmp) / "post.lua"
            script.write_text(WRK_LUA % ", ".join(f"[==[{b}]==]" for b in bodies))
            if warmup > 0:
                _wrk_run(wrk, script, url, concurrency, warmup)
            runs = [_wrk_run(wrk, script, url, concurrency, seconds) for _ in range(repeats)]
    else:
        spec = {"url": url, "bodies": [] if unique else bodies, "unique": unique,
                "concurrency": concurrency, "seconds": seconds, "warmup": warmup,
                "repeats": repeats}
        p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "_loadgen",
                            json.dumps(spec)], check=False, capture_output=True, text=True,
                           timeout=warmup + repeats * (seconds + 90) + 60)
        if p.returncode != 0:
            raise BenchError(f"load generator failed: {p.stderr.strip()[-400:]}")
        runs = json.loads(p.stdout.strip().splitlines()[-1])["runs"]
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "tool": tool, "concurrency": concurrency, "runs": runs,
        "rps": median([r["rps"] for r in runs]),
        "p50_ms": median([r["p50_ms"] for r in runs]),
        "p99_ms": median([r["p99_ms"] for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "loadgen_cpu_pct": 100 * cpu / wall if wall else float("nan"),
    }


def bench_http(model_uri: str, tracking_uri: str, *, batching_modes: Sequence[bool] = (True, False),
               concurrencies: Sequence[int] = (1, 8, 32), seconds: float = 10,
               warmup: float = 2, repeats: int = 5, tool: str = "httpx",
               sample_interval: float = 0.5) -> list[dict[str, Any]]:
    """One service per batching mode, one after the other; every concurrency level on each."""
    out = []
    for batching in batching_modes:
        name = "on" if batching else "off"
        log(f"[http] starting the service, batching {name} ...")
        with running_service(model_uri, tracking_uri, batching=batching) as svc:
            log(f"[http] ready in {svc.startup_s:.0f}s at {svc.url} (model {svc.model}, "
                f"pid {svc.pid})")
            levels = []
            with MemorySampler(svc, interval=sample_interval) as mem:
                for c in concurrencies:
                    cpu0, t0 = tree_cpu_times(svc.pid), time.perf_counter()
                    res = run_load(svc.url, concurrency=c, seconds=seconds, warmup=warmup,
                                   repeats=repeats, tool=tool)
                    res.update(cpu_share(cpu0, tree_cpu_times(svc.pid), time.perf_counter() - t0))
                    log(f"[http] batching {name} c={c}: {res['rps']:.1f} req/s, "
                        f"p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, "
                        f"{res['errors']} errors")
                    levels.append(res)
            out.append({"batching": batching, "url": svc.url, "model": svc.model,
                        "startup_s": svc.startup_s, "levels": levels,
                        "memory": mem.summary()})
    return out


# ------------------------------------------------------------------------------------------
# 2c. side by side: the plain peer, both engines, similar reviews on and off, the cache


@contextmanager
def running_peer(bundle_dir: Path, *, host: str = "127.0.0.1",
                 ready_timeout: float = 300) -> Iterator[Service]:
    """``benchmarks/peer_app.py`` (the plain FastAPI peer) on a free port; ended after."""
    import httpx

    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="shopsense-peer-"))
    logf = (home / "peer.log").open("wb")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "peer_app.py"),
                             "--model", str(bundle_dir), "--host", host, "--port", str(port)],
                            stdout=logf, stderr=subprocess.STDOUT, env=env)
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise BenchError(f"the peer app exited ({proc.returncode}) [log: {logf.name}]")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise BenchError("the peer app was not ready in time")
            time.sleep(0.3)
        yield Service(url=url, pid=proc.pid, home=home, env=env, model="peer",
                      startup_s=time.perf_counter() - t0)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        logf.close()
        shutil.rmtree(home, ignore_errors=True)


def build_similar_index(data_dir: Path, n: int) -> tuple[Path, Path]:
    """An index of ``n`` Blitzer electronics reviews for the similar-review rows, made once
    with ``shopsense index`` in its own home; returns (index folder, home)."""
    from shopsense.data.loaders import load_set

    home = Path(tempfile.mkdtemp(prefix="shopsense-bench-index-"))
    index_dir = home / "index"
    reviews = load_set("blitzer-electronics", data_dir)[:n]
    jsonl = home / "reviews.jsonl"
    jsonl.write_text("".join(r.model_dump_json() + "\n" for r in reviews))
    env = {**os.environ, "SHOPSENSE_HOME": str(home), "SHOPSENSE_RETRIEVAL__DIR": str(index_dir)}
    log(f"[side] indexing {len(reviews)} reviews for similar reviews ...")
    p = subprocess.run([*_cli_argv(), "index", "--data", str(jsonl)], env=env, check=False,
                       capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise BenchError(f"`shopsense index` failed: {(p.stderr or p.stdout).strip()[-300:]}")
    return index_dir, home


#: (key, what, engine or None for the peer, similar on, cache on, load with repeats)
SIDE_BY_SIDE: tuple[tuple[str, str, str | None, bool, bool, bool], ...] = (
    ("peer", "plain FastAPI peer (benchmarks/peer_app.py)", None, False, False, False),
    ("local", "shopsense serve, engine local, similar off", "local", False, False, False),
    ("local+similar", "shopsense serve, engine local, similar on", "local", True, False, False),
    ("ray", "shopsense serve, engine ray, similar off", "ray", False, False, False),
    ("ray+similar", "shopsense serve, engine ray, similar on", "ray", True, False, False),
    ("local-openvino", "shopsense serve, engine local, text engine openvino, similar off",
     "local", False, False, False),
    ("local-openvino+similar", "shopsense serve, engine local, text engine openvino, "
     "similar on", "local", True, False, False),
    ("repeats-nocache", "engine local, similar on, 8 texts repeated, no cache", "local",
     True, False, True),
    ("repeats-cache", "engine local, similar on, 8 texts repeated, in-process LRU", "local",
     True, True, True),
)
#: settings a side-by-side row adds to its service (the rest is the default)
SIDE_ENV: dict[str, dict[str, str]] = {
    "local-openvino": {"SHOPSENSE_SERVE__TEXT_ENGINE": "openvino"},
    "local-openvino+similar": {"SHOPSENSE_SERVE__TEXT_ENGINE": "openvino"},
}


def bench_side_by_side(bundle_dir: Path, model_uri: str, tracking_uri: str, data_dir: Path, *,
                       configs: Sequence[str], concurrencies: Sequence[int], seconds: float,
                       warmup: float, repeats: int, index_size: int) -> list[dict[str, Any]]:
    """Every configuration in turn (one server at a time), the same load generator: distinct
    texts (no cache hit possible) unless the row is a load with repeats. Medians of
    ``repeats`` runs per level."""
    chosen = [c for c in SIDE_BY_SIDE if c[0] in configs]
    index = None
    if any(c[3] for c in chosen):
        index = build_similar_index(data_dir, index_size)
    out = []
    try:
        for key, what, engine, similar, cache, repeated in chosen:
            log(f"[side] {key}: starting ...")
            if engine is None:
                ctx = running_peer(bundle_dir)
            else:
                env = {"SHOPSENSE_CACHE__ENABLED": "true" if cache else "false",
                       "SHOPSENSE_SERVE__SIMILAR_K": "3" if similar else "0",
                       "SHOPSENSE_SERVE__RETRIEVAL": "true" if similar else "false",
                       **SIDE_ENV.get(key, {})}
                if index is not None:
                    env["SHOPSENSE_RETRIEVAL__DIR"] = str(index[0])
                ctx = running_service(model_uri, tracking_uri, batching=True, engine=engine,
                                      env_extra=env)
            levels = []
            with ctx as svc, MemorySampler(svc) as mem:
                for c in concurrencies:
                    cpu0, t0 = tree_cpu_times(svc.pid), time.perf_counter()
                    res = run_load(svc.url, concurrency=c, seconds=seconds, warmup=warmup,
                                   repeats=repeats, unique=not repeated)
                    res.update(cpu_share(cpu0, tree_cpu_times(svc.pid), time.perf_counter() - t0))
                    log(f"[side] {key} c={c}: {res['rps']:.1f} req/s, p50 {res['p50_ms']:.1f} "
                        f"ms, {res['errors']} errors, loadgen CPU {res['loadgen_cpu_pct']:.0f}%")
                    levels.append(res)
            out.append({"key": key, "what": what, "engine": engine, "similar": similar,
                        "cache": cache, "repeats": repeated, "startup_s": svc.startup_s,
                        "levels": levels, "memory": mem.summary()})
    finally:
        if index is not None:
            shutil.rmtree(index[1], ignore_errors=True)
    return out


def side_ratios(side: list[dict], inproc: list[dict]) -> None:
    """Each level's ratio to the peer at the same concurrency and to in-process throughput
    (c=1 against batch 1, otherwise against the largest batch; text only), in place."""
    peer = next((r for r in side if r["key"] == "peer"), None)
    text = {r["batch"]: r["items_per_s"] for r in inproc if r["mode"] == "text"}
    for row in side:
        for lv in row["levels"]:
            c = lv["concurrency"]
            ref = next((p for p in (peer or {}).get("levels", []) if p["concurrency"] == c), None)
            lv["rps_vs_peer"] = lv["rps"] / ref["rps"] if ref and ref["rps"] else None
            lv["p50_vs_peer"] = lv["p50_ms"] / ref["p50_ms"] if ref and ref["p50_ms"] else None
            batch = 1 if c == 1 else (max(text) if text else None)
            base = text.get(batch) if batch else None
            lv["inproc_batch"] = batch
            lv["rps_vs_inproc"] = lv["rps"] / base if base else None


# ------------------------------------------------------------------------------------------
# 2d. the text encoder's engines: speed in-process and agreement with torch on held-out data


def bench_engines(bundle_dir: Path, engines: Sequence[str], data_dir: Path, *,
                  heldout_per_set: int, repeats: int, items: int, warmup: int,
                  threads: int) -> dict[str, Any]:
    """For each text engine: in-process batch-1 and batch-32 throughput (text), and its
    predictions on the bundle's held-out sets against the torch engine's: accuracy, agreement
    (same label), largest probability difference."""
    import numpy as np

    from shopsense.model.classifier import Predictor, read_bundle_meta
    from shopsense.model.train import DEFAULT_EVAL_SETS, evaluation_report, load_labelled

    meta = read_bundle_meta(bundle_dir)
    sets = meta.get("train", {}).get("eval_sets") or list(DEFAULT_EVAL_SETS)
    rows = load_labelled(sets, data_dir, heldout_per_set, seed=0)
    texts = [r["text"] for r in rows]
    log(f"[engines] {len(rows)} held-out reviews from {', '.join(sets)}")
    cache_dir = Path(tempfile.mkdtemp(prefix="shopsense-engines-"))
    out: list[dict[str, Any]] = []
    ref_proba = None
    try:
        for name in ["torch", *[e for e in engines if e != "torch"]]:
            t0 = time.perf_counter()
            predictor = Predictor.from_bundle(bundle_dir, threads=threads, text_engine=name,
                                              engine_cache_dir=cache_dir)
            load_s = time.perf_counter() - t0
            speed = bench_inprocess(predictor, batch_sizes=(1, 32), modes=("text",),
                                    repeats=repeats, items=items, warmup=warmup)
            proba = np.concatenate([predictor.predict_proba(texts[i:i + 32])
                                    for i in range(0, len(texts), 32)])
            report = evaluation_report(rows, proba)
            row = {"engine": name, "load_s": load_s,
                   "batch1_per_s": next(r["items_per_s"] for r in speed if r["batch"] == 1),
                   "batch32_per_s": next(r["items_per_s"] for r in speed if r["batch"] == 32),
                   "accuracy": report["accuracy"], "macro_f1": report.get("macro_f1"),
                   "n": len(rows)}
            if ref_proba is None:
                ref_proba = proba
            row["agreement"] = float((proba.argmax(1) == ref_proba.argmax(1)).mean())
            row["max_abs_diff"] = float(np.abs(proba - ref_proba).max())
            out.append(row)
            log(f"[engines] {name}: b1 {row['batch1_per_s']:.1f}/s, b32 "
                f"{row['batch32_per_s']:.1f}/s, accuracy {row['accuracy']:.4f}, agreement "
                f"{row['agreement']:.4f}")
            del predictor
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    torch_row = out[0]
    for row in out:
        row["accuracy_delta_points"] = 100 * (row["accuracy"] - torch_row["accuracy"])
        row["batch1_vs_torch"] = row["batch1_per_s"] / torch_row["batch1_per_s"]
        row["batch32_vs_torch"] = row["batch32_per_s"] / torch_row["batch32_per_s"]
    return {"sets": sets, "rows": out}


# ------------------------------------------------------------------------------------------
# targets and report


def _inproc_text_ref(inproc: list[dict]) -> dict | None:
    rows = [r for r in inproc if r["mode"] == "text"]
    return max(rows, key=lambda r: r["batch"]) if rows else None


def compute_targets(inproc: list[dict], http: list[dict]) -> list[dict[str, Any]]:
    """The three targets; a figure not measured in this run is reported as such."""
    targets = []
    ref = _inproc_text_ref(inproc)
    on = next((h for h in http if h["batching"]), None)
    top = max(on["levels"], key=lambda lv: lv["concurrency"]) if on and on["levels"] else None
    name = (f"HTTP c={top['concurrency'] if top else 32} batching / "
            f"in-process batch {ref['batch'] if ref else 32} (text)")
    value = top["rps"] / ref["items_per_s"] if (top and ref) else None
    targets.append({"target": name, "goal": f">= {TARGET_HTTP_RATIO}", "value": value,
                    "display": fmt(value, 2), "met": None if value is None else
                    value >= TARGET_HTTP_RATIO,
                    "missed_by": None if value is None or value >= TARGET_HTTP_RATIO else
                    f"{TARGET_HTTP_RATIO - value:.2f} ({(1 - value / TARGET_HTTP_RATIO):.0%} short)"})
    c1 = min(on["levels"], key=lambda lv: lv["concurrency"]) if on and on["levels"] else None
    value = c1["p50_ms"] if c1 else None
    targets.append({"target": f"p50 latency at c={c1['concurrency'] if c1 else 1} (batching on)",
                    "goal": f"< {TARGET_P50_C1_MS:.0f} ms",
                    "value": value, "display": f"{fmt(value)} ms" if value is not None else "-",
                    "met": None if value is None else value < TARGET_P50_C1_MS,
                    "missed_by": None if value is None or value < TARGET_P50_C1_MS else
                    f"{value - TARGET_P50_C1_MS:.1f} ms ({value / TARGET_P50_C1_MS - 1:.0%} over)"})
    peaks = [h["memory"]["peak_total_bytes"] / GIB for h in http]
    value = max(peaks) if peaks else None
    targets.append({"target": "peak RSS, serving process tree", "goal": f"< {TARGET_RSS_GIB} GiB",
                    "value": value, "display": f"{fmt(value, 2)} GiB" if value is not None else "-",
                    "met": None if value is None else value < TARGET_RSS_GIB,
                    "missed_by": None if value is None or value < TARGET_RSS_GIB else
                    f"{value - TARGET_RSS_GIB:.2f} GiB ({value / TARGET_RSS_GIB - 1:.0%} over)"})
    return targets


def side_targets(side: list[dict]) -> list[dict[str, Any]]:
    """The one-machine targets against the plain peer, for each ``shopsense serve`` row with
    distinct texts: at the highest concurrency at least the peer's throughput, at the lowest a
    p50 at or below the peer's."""
    targets = []
    for row in side:
        if row["key"] == "peer" or row["repeats"] or not row["levels"]:
            continue
        hi = max(row["levels"], key=lambda lv: lv["concurrency"])
        lo = min(row["levels"], key=lambda lv: lv["concurrency"])
        for what, goal, value, ok in (
                (f"{row['key']}: req/s at c={hi['concurrency']} / peer", ">= 1.00",
                 hi.get("rps_vs_peer"), lambda v: v >= 1.0),
                (f"{row['key']}: p50 at c={lo['concurrency']} / peer", "<= 1.00",
                 lo.get("p50_vs_peer"), lambda v: v <= 1.0)):
            met = None if value is None else ok(value)
            targets.append({"target": what, "goal": goal, "value": value,
                            "display": fmt(value, 2), "met": met,
                            "missed_by": None if met in (None, True) else
                            f"{abs(value - 1.0):.2f}"})
    return targets


def print_report(result: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 140)
    m = result["machine"]
    console.print(f"[bold]shopsense speed[/bold]  {m['date']}  host {m['host']}")
    console.print(f"CPU: {m['cpu_model']}; {m['logical_cores']} logical / "
                  f"{m['physical_cores']} physical cores ({m['usable_cores']} usable); "
                  f"torch {m['torch']} with {m['torch_threads']} threads (in-process); "
                  f"RAM {m['memory_gib']} GiB; load avg 1m at start {m['loadavg_1m_start']}"
                  + (f", at end {m['loadavg_1m_end']}" if "loadavg_1m_end" in m else ""))
    if m.get("loadavg_1m_start", 0) > 0.5 * (m.get("usable_cores") or 1):
        console.print(f"[yellow]note: the machine was busy before the run (load average "
                      f"{m['loadavg_1m_start']} on {m['usable_cores']} cores): figures are "
                      f"noisy[/yellow]")
    cfg = result["config"]
    console.print(f"model: {result['model']['uri']} (v{result['model']['version']}, "
                  f"max_length {result['model'].get('max_length')}); repeats {cfg['repeats']}, "
                  f"medians shown")

    inproc = result["inprocess"]
    if inproc:
        t = Table(title="In-process Predictor.predict_proba (median of runs)")
        for col in ("input", "batch", "predictions/s", "ms / call", "vs batch 1", "runs"):
            t.add_column(col, justify="left" if col == "input" else "right")
        for r in inproc:
            t.add_row(r["mode"], str(r["batch"]), fmt(r["items_per_s"]), fmt(r["ms_per_call"]),
                      f"x{fmt(r['speedup_vs_batch1'], 2)}" if r["speedup_vs_batch1"] else "-",
                      str(len(r["runs"])))
        console.print(t)

    eng = result.get("engines")
    if eng:
        t = Table(title=f"Text encoder engines, in-process (text; held-out: "
                        f"{eng['rows'][0]['n']} reviews of {', '.join(eng['sets'])})")
        for col in ("engine", "batch 1 pred/s", "x torch", "batch 32 pred/s", "x torch",
                    "accuracy", "vs torch (points)", "agreement", "max |dp|", "load s"):
            t.add_column(col, justify="left" if col == "engine" else "right")
        for r in eng["rows"]:
            t.add_row(r["engine"], fmt(r["batch1_per_s"]), fmt(r["batch1_vs_torch"], 2),
                      fmt(r["batch32_per_s"]), fmt(r["batch32_vs_torch"], 2),
                      fmt(r["accuracy"], 4), f"{r['accuracy_delta_points']:+.2f}",
                      fmt(r["agreement"], 4), fmt(r["max_abs_diff"], 4), fmt(r["load_s"], 1))
        console.print(t)

    side = result.get("side")
    if side:
        t = Table(title=f"Side by side, POST /v1/sentiment, one short text-only review per "
                        f"request (httpx in another process, {cfg['seconds']:g} s x "
                        f"{cfg['http_repeats']} per level, medians; CPU in % of one core)")
        for col in ("configuration", "c", "req/s", "p50 ms", "p99 ms", "errors", "x peer req/s",
                    "x peer p50", "x in-proc", "server CPU", "loadgen CPU"):
            t.add_column(col, justify="left" if col == "configuration" else "right")
        for row in side:
            for lv in row["levels"]:
                t.add_row(row["key"], str(lv["concurrency"]), fmt(lv["rps"]), fmt(lv["p50_ms"]),
                          fmt(lv["p99_ms"]), str(lv["errors"]), fmt(lv.get("rps_vs_peer"), 2),
                          fmt(lv.get("p50_vs_peer"), 2),
                          f"{fmt(lv.get('rps_vs_inproc'), 2)} (b{lv.get('inproc_batch')})",
                          f"{lv.get('server_cpu_pct', float('nan')):.0f}%",
                          f"{lv['loadgen_cpu_pct']:.0f}%")
        console.print(t)
        for row in side:
            mem = row.get("memory")
            peak = (f"; peak RSS {mem['peak_total_bytes'] / GIB:.2f} GiB over "
                    f"{mem['peak_processes']} processes" if mem else "")
            console.print(f"  {row['key']}: {row['what']}{peak}")

    ref = _inproc_text_ref(inproc)
    for h in result["http"]:
        mem = h["memory"]
        t = Table(title=f"HTTP POST /v1/sentiment, batching {'ON' if h['batching'] else 'OFF'} "
                        f"({cfg['load']}, {cfg['seconds']:g} s x {cfg['http_repeats']} per level, "
                        f"startup {h['startup_s']:.0f} s; CPU in % of one core)")
        for col in ("concurrency", "req/s", "p50 ms", "p99 ms", "errors", "requests",
                    f"/ in-proc b{ref['batch'] if ref else '?'}", "server CPU",
                    "replica CPU", "loadgen CPU"):
            t.add_column(col, justify="right")
        for lv in h["levels"]:
            t.add_row(str(lv["concurrency"]), fmt(lv["rps"]), fmt(lv["p50_ms"]),
                      fmt(lv["p99_ms"]), str(lv["errors"]), str(lv["requests"]),
                      fmt(lv["rps"] / ref["items_per_s"], 2) if ref else "-",
                      f"{lv.get('server_cpu_pct', float('nan')):.0f}%",
                      f"{lv.get('replica_cpu_pct', float('nan')):.0f}%",
                      f"{lv['loadgen_cpu_pct']:.0f}%")
        console.print(t)
        console.print(f"  memory (batching {'on' if h['batching'] else 'off'}): peak RSS sum "
                      f"{mem['peak_total_bytes'] / GIB:.2f} GiB over {mem['peak_processes']} "
                      f"processes (idle, model loaded: {mem['idle_total_bytes'] / GIB:.2f} GiB); "
                      f"largest process {mem['largest_bytes'] / GIB:.2f} GiB "
                      f"({mem['largest_process']}); {mem['samples']} samples")
        top = list(mem.get("peak_breakdown_bytes", {}).items())[:5]
        if top:
            console.print("  at peak: " + ", ".join(f"{k} {v / GIB:.2f}" for k, v in top)
                          + " GiB")

    t = Table(title="Targets")
    for col in ("target", "goal", "measured", "status"):
        t.add_column(col)
    for tg in result["targets"]:
        status = ("not measured" if tg["met"] is None else "met" if tg["met"]
                  else f"missed by {tg['missed_by']}")
        t.add_row(tg["target"], tg["goal"], tg["display"], status)
    console.print(t)


# ------------------------------------------------------------------------------------------
# main


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None,
                    help="models:/name@alias, models:/name/N or a bundle directory "
                         "(default models:/shopsense-sentiment@champion in SHOPSENSE_HOME)")
    ap.add_argument("--repeats", type=int, default=5, help="runs per figure (median shown)")
    ap.add_argument("--http-repeats", type=int, default=None,
                    help="runs per HTTP level (default: --repeats)")
    ap.add_argument("--items", type=int, default=64,
                    help="in-process: items predicted per run (at least 2 calls)")
    ap.add_argument("--threads", type=int, default=0,
                    help="in-process torch threads (default 0: torch's default, all cores)")
    ap.add_argument("--warmup-calls", type=int, default=3, help="in-process untimed calls")
    ap.add_argument("--batch-sizes", type=_ints, default=[1, 32], help="in-process, e.g. 1,32")
    ap.add_argument("--modes", default="text,text+image",
                    help="in-process inputs: text, text+image")
    ap.add_argument("--concurrency", type=_ints, default=[1, 8, 32], help="HTTP, e.g. 1,8,32")
    ap.add_argument("--batching", choices=("both", "on", "off"), default="both",
                    help="HTTP: which serving configurations to run")
    ap.add_argument("--seconds", type=float, default=10.0, help="HTTP: seconds per run")
    ap.add_argument("--warmup", type=float, default=2.0, help="HTTP: warm-up seconds per level")
    ap.add_argument("--load", choices=("httpx", "wrk"), default="httpx",
                    help="HTTP load generator (wrk if installed; falls back to httpx)")
    ap.add_argument("--sample-interval", type=float, default=0.5, help="RSS sampling period (s)")
    ap.add_argument("--skip-inprocess", action="store_true")
    ap.add_argument("--skip-http", action="store_true",
                    help="skip the batching on/off HTTP tables (the side-by-side runs anyway)")
    ap.add_argument("--side", default=",".join(c[0] for c in SIDE_BY_SIDE),
                    help="side-by-side configurations, comma-separated ('' = none): "
                         + ", ".join(c[0] for c in SIDE_BY_SIDE))
    ap.add_argument("--side-concurrency", type=_ints, default=[1, 32],
                    help="side by side: concurrency levels")
    ap.add_argument("--index-size", type=int, default=500,
                    help="side by side: reviews indexed for the similar-review rows")
    ap.add_argument("--engines", default="torch,torch-int8,onnx,onnx-int8,openvino",
                    help="text encoder engines to compare in-process ('' = none)")
    ap.add_argument("--heldout-per-set", type=int, default=300,
                    help="engines: held-out reviews per evaluation set")
    ap.add_argument("--json", dest="json_out", type=Path, default=None,
                    help="write the raw figures to this file")
    args = ap.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.side = [c.strip() for c in args.side.split(",") if c.strip()]
    unknown = set(args.side) - {c[0] for c in SIDE_BY_SIDE}
    if unknown:
        ap.error(f"unknown --side {sorted(unknown)}")
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    from shopsense.model.text_engines import TEXT_ENGINES

    if set(args.engines) - set(TEXT_ENGINES):
        ap.error(f"unknown --engines {sorted(set(args.engines) - set(TEXT_ENGINES))}; "
                 f"choose from {', '.join(TEXT_ENGINES)}")
    bad = set(args.modes) - {"text", "text+image"}
    if bad:
        ap.error(f"unknown --modes {sorted(bad)}; use text and/or text+image")
    if args.http_repeats is None:
        args.http_repeats = args.repeats
    return args


def run(args: argparse.Namespace, console=None) -> dict[str, Any]:
    """The whole benchmark; returns the raw result (also written to ``--json``)."""
    for key, val in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                     ("RAY_USAGE_STATS_ENABLED", "0")):
        os.environ.setdefault(key, val)
    import logging

    import mlflow  # noqa: F401 - configures its loggers on import; quiet them after that

    for noisy in ("mlflow", "alembic", "httpx", "urllib3", "transformers", "peft"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    resolved, settings = resolve_model(args.model)
    tool = args.load
    if tool == "wrk" and shutil.which("wrk") is None:
        log("[http] wrk not found (apt-get install -y wrk); using the httpx load generator")
        tool = "httpx"
    from shopsense.model.classifier import read_bundle_meta

    meta = read_bundle_meta(resolved.bundle_dir)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        | {"load": tool},
        "model": {"uri": resolved.uri, "name": resolved.name, "version": resolved.version,
                  "bundle_dir": str(resolved.bundle_dir),
                  "max_length": meta.get("config", {}).get("max_length")},
        "inprocess": [], "http": [], "side": [], "engines": None,
    }
    if not args.skip_inprocess:
        from shopsense.model.classifier import Predictor

        log(f"[in-process] loading {resolved.bundle_dir} ...")
        predictor = Predictor.from_bundle(resolved.bundle_dir, threads=args.threads)
        result["machine"]["torch_threads"] = __import__("torch").get_num_threads()
        result["inprocess"] = bench_inprocess(
            predictor, batch_sizes=args.batch_sizes, modes=args.modes, repeats=args.repeats,
            items=args.items, warmup=args.warmup_calls)
        del predictor
    uri = resolved.uri if resolved.uri.startswith("models:/") else str(resolved.bundle_dir)
    if args.engines:
        result["engines"] = bench_engines(
            resolved.bundle_dir, args.engines, settings.data_dir,
            heldout_per_set=args.heldout_per_set, repeats=args.repeats, items=args.items,
            warmup=args.warmup_calls, threads=args.threads)
    if args.side:
        result["side"] = bench_side_by_side(
            resolved.bundle_dir, uri, settings.tracking_uri(), settings.data_dir,
            configs=args.side, concurrencies=args.side_concurrency, seconds=args.seconds,
            warmup=args.warmup, repeats=args.http_repeats, index_size=args.index_size)
        side_ratios(result["side"], result["inprocess"])
    if not args.skip_http:
        modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.batching]
        result["http"] = bench_http(
            uri, settings.tracking_uri(), batching_modes=modes, concurrencies=args.concurrency,
            seconds=args.seconds, warmup=args.warmup, repeats=args.http_repeats, tool=tool,
            sample_interval=args.sample_interval)
    result["machine"]["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    result["targets"] = (compute_targets(result["inprocess"], result["http"])
                         + side_targets(result["side"]))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2, default=str))
    print_report(result, console)
    if args.json_out:
        log(f"raw figures: {args.json_out}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_loadgen"]:  # internal: the load-generator process
        print(json.dumps(loadgen_child(json.loads(argv[1]))))
        return 0
    # The project's state by default, as `make` sets it.
    os.environ.setdefault("SHOPSENSE_HOME", str(ROOT / ".shopsense"))
    args = parse_args(argv)
    try:
        run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
