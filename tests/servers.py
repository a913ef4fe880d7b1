"""Real servers on 127.0.0.1 for the tests, started and stopped by the tests themselves:
a PostgreSQL 15 cluster (``initdb`` + ``postgres`` from the machine's PostgreSQL binaries) and
an ``mlflow server`` whose tracking and registry store is that database (what a cluster runs;
sqlite stays the embedded default).

Each gets a free port and its own temporary folder; nothing outlives the ``with`` block.
PostgreSQL refuses to run as root, so under root the cluster's files belong to, and the server
runs as, the ``postgres`` system user (or ``nobody``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

PG_VERSION = "15"


class ServerDidNotStart(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """Terminate a server we started (SIGTERM, then SIGKILL after ``grace_s``)."""
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def postgres_bin() -> Path | None:
    """The PostgreSQL 15 binaries: ``SHOPSENSE_PG_BIN``, Debian's layout, or ``pg_ctl`` on PATH
    when it is version 15."""
    env = os.environ.get("SHOPSENSE_PG_BIN")
    candidates = [Path(env)] if env else []
    candidates += [Path(p) for p in sorted(glob.glob(f"/usr/lib/postgresql/{PG_VERSION}/bin"))]
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).parent)
    for c in candidates:
        if (c / "initdb").exists() and (c / "postgres").exists():
            out = subprocess.run([str(c / "postgres"), "--version"], capture_output=True,
                                 text=True, check=False).stdout
            if f" {PG_VERSION}." in out:
                return c
    return None


def _run_as() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
            return pw.pw_uid, pw.pw_gid
        except KeyError:
            continue
    raise ServerDidNotStart("running as root and no postgres/nobody user to run PostgreSQL as")


@contextlib.contextmanager
def postgres_server(database: str = "mlflow") -> Iterator[str]:
    """A fresh PostgreSQL 15 on 127.0.0.1; yields a SQLAlchemy URL of ``database``."""
    bindir = postgres_bin()
    if bindir is None:
        raise ServerDidNotStart(f"no PostgreSQL {PG_VERSION} binaries (initdb, postgres)")
    # Not under pytest's tmp_path: its parents are private to root, and the server may run as
    # another user.
    root = Path(tempfile.mkdtemp(prefix="shopsense-pg-"))
    data, sock = root / "data", root / "sock"
    data.mkdir()
    sock.mkdir()
    ids = _run_as()
    if ids:
        for p in (root, data, sock):
            os.chown(p, *ids)
    kw = {"user": ids[0], "group": ids[1], "extra_groups": []} if ids else {}
    port = free_port()
    log = root / "server.log"
    proc = None
    try:
        subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "shopsense",
                        "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, cwd=root, **kw)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
                 "-k", str(sock), "-c", "fsync=off", "-c", "max_connections=50"],
                stdout=out, stderr=subprocess.STDOUT, cwd=root, **kw)
        deadline = time.monotonic() + 60
        while True:
            ready = subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p",
                                    str(port), "-U", "shopsense"], capture_output=True)
            if ready.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServerDidNotStart(f"postgres did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                        "shopsense", database], check=True, capture_output=True)
        yield f"postgresql+psycopg2://shopsense@127.0.0.1:{port}/{database}"
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifacts: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 over ``backend_store_uri``; yields its URL."""
    port = free_port()
    exe = Path(sys.executable).with_name("mlflow")
    artifacts.mkdir(parents=True, exist_ok=True)
    log = artifacts.parent / f"mlflow-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), "server", "--backend-store-uri", backend_store_uri,
             "--default-artifact-root", artifacts.as_uri(), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT,
            # no MLFLOW_* from the test process: mlflow.set_registry_uri() (called by earlier
            # tests in this process) exports MLFLOW_REGISTRY_URI, which would redirect the
            # server
            env={**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
                 "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServerDidNotStart(f"mlflow server did not start: {log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        stop(proc)


@contextlib.contextmanager
def mlflow_on_postgres(workdir: Path) -> Iterator[str]:
    """A real ``mlflow server`` on a real PostgreSQL 15, both on 127.0.0.1."""
    with postgres_server() as db, mlflow_server(db, workdir / "artifacts") as url:
        yield url


def redis_bin() -> Path | None:
    """``redis-server`` (Debian's package): ``SHOPSENSE_REDIS_SERVER`` or on PATH."""
    found = os.environ.get("SHOPSENSE_REDIS_SERVER") or shutil.which("redis-server")
    return Path(found) if found and Path(found).exists() else None


@contextlib.contextmanager
def redis_server(*, maxmemory: str | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """A fresh ``redis-server`` on 127.0.0.1 (no persistence, its own folder, a free port);
    yields its ``redis://`` URL and the process (a test may stop it to see an outage)."""
    exe = redis_bin()
    if exe is None:
        raise ServerDidNotStart("no redis-server binary (apt-get install redis-server)")
    root = Path(tempfile.mkdtemp(prefix="shopsense-redis-"))
    port = free_port()
    argv = [str(exe), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(root),
            "--save", "", "--appendonly", "no", "--protected-mode", "yes",
            "--logfile", str(root / "redis.log"), "--daemonize", "no"]
    if maxmemory:
        argv += ["--maxmemory", maxmemory, "--maxmemory-policy", "allkeys-lru",
                 "--maxmemory-samples", "10"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=root)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log = root / "redis.log"
                raise ServerDidNotStart("redis-server did not start: "
                                        + (log.read_text()[-2000:] if log.exists() else ""))
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        if proc.poll() is None:
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)
