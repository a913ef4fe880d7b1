"""The embedded LLM server: llama-cpp-python's OpenAI-compatible server on 127.0.0.1, running
one of the offline GGUF models (:mod:`shopsense.llm.weights`).

``llm_endpoint()`` is what every step that needs the LLM calls: with ``SHOPSENSE_LLM_BASE_URL``
set it returns that endpoint (vLLM in a cluster, any OpenAI-compatible server), otherwise it
starts the embedded server for the caller's lifetime (nested callers in one process share one
server) and stops it afterwards. ``shopsense llm serve`` runs the same server in the
foreground for other processes.

The server runs with ``logits_all`` on: the labeller reads the first answer token's
``top_logprobs``, which llama-cpp-python only returns then (it costs about 20 % of prompt
speed on this machine's CPU).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from shopsense.llm.weights import INSTALL_HINT, EmbeddedLLM, LLMUnavailable, embedded_model, materialise

log = logging.getLogger(__name__)

__all__ = ["EmbeddedServer", "LLMEndpoint", "configured_identity", "llm_endpoint",
           "runtime_available"]


@dataclass(frozen=True)
class LLMEndpoint:
    """Where an OpenAI-compatible LLM answers, and what to call it."""

    base_url: str  # ends in /v1
    model: str  # the ``model`` field requests send
    identity: str  # recorded as the source of what the model makes (labels, texts)
    api_key: str | None = None
    embedded: bool = False


def runtime_available() -> bool:
    """Whether llama-cpp-python (with its server) is installed. Looked up, not imported: its
    native library brings its own OpenMP runtime, which must not share a process with torch's
    (the two crash the interpreter at exit); only the server's child process loads it."""
    from importlib.util import find_spec

    try:
        spec = find_spec("llama_cpp")  # a top-level name: finding it imports nothing
    except (ImportError, ValueError):
        return False
    return spec is not None and any((Path(d) / "server" / "__main__.py").is_file()
                                    for d in spec.submodule_search_locations or ())


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedServer:
    """One ``python -m llama_cpp.server`` child process serving ``model`` on ``host:port``."""

    def __init__(self, model: EmbeddedLLM, *, host: str = "127.0.0.1", port: int = 0,
                 threads: int = 0, context: int = 2048, api_key: str | None = None,
                 log_path: Path | None = None) -> None:
        self.model = model
        self.host = host
        self.port = port or _free_port(host)
        self.threads = threads or (os.cpu_count() or 1)
        self.context = context
        self.api_key = api_key
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None
        self._log_file = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def endpoint(self) -> LLMEndpoint:
        return LLMEndpoint(base_url=self.base_url, model=self.model.key,
                           identity=self.model.identity, api_key=self.api_key, embedded=True)

    def command(self, gguf: Path) -> list[str]:
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
                "--model_alias", self.model.key, "--host", self.host, "--port", str(self.port),
                "--n_ctx", str(self.context), "--n_threads", str(self.threads),
                "--n_threads_batch", str(self.threads), "--logits_all", "true",
                "--verbose", "false"]
        if self.api_key:
            argv += ["--api_key", self.api_key]
        return argv

    def start(self, *, timeout_s: float = 180.0) -> LLMEndpoint:
        if not runtime_available():
            raise LLMUnavailable(f"the LLM runtime (llama-cpp-python) is not installed; "
                                 f"{INSTALL_HINT}")
        gguf = materialise(self.model)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="shopsense-llm-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        log.info("starting %s on %s (%d threads)", self.model.name, self.base_url, self.threads)
        self._proc = subprocess.Popen(self.command(gguf), stdout=self._log_file,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        deadline = time.monotonic() + timeout_s
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise LLMUnavailable(f"the LLM server exited with {self._proc.returncode}: "
                                     f"{tail or 'no output'}")
            try:
                r = httpx.get(f"{self.base_url}/models", headers=headers, timeout=2.0)
                if r.status_code == 200:
                    return self.endpoint()
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise LLMUnavailable(f"the LLM server did not answer within {timeout_s:.0f} s")

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> LLMEndpoint:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# One embedded server per process and model, shared by nested callers of llm_endpoint().
_lock = threading.Lock()
_shared: dict[str, tuple[EmbeddedServer, int]] = {}


def _remote(settings) -> LLMEndpoint:
    base = settings.llm_base_url.rstrip("/")
    model = settings.llm_model or "default"
    host = httpx.URL(base).host or base
    return LLMEndpoint(base_url=base, model=model, identity=f"{model}@{host}",
                       api_key=settings.llm_api_key)


def configured_identity(settings=None) -> str:
    """The identity of the LLM the settings name, without starting it (what its labels are
    filed under)."""
    from shopsense.settings import get_settings

    s = settings or get_settings()
    if s.llm_base_url:
        return _remote(s).identity
    return embedded_model(s.llm.embedded_model).identity


@contextlib.contextmanager
def llm_endpoint(settings=None, *, model: str | None = None) -> Iterator[LLMEndpoint]:
    """The configured LLM endpoint, or the embedded server (started for this block)."""
    from shopsense.settings import get_settings

    s = settings or get_settings()
    if s.llm_base_url:
        yield _remote(s)
        return
    m = embedded_model(model or s.llm.embedded_model)
    with _lock:
        entry = _shared.get(m.key)
        if entry is None or not entry[0].alive():
            server = EmbeddedServer(m, threads=s.llm.threads, context=s.llm.context,
                                    log_path=s.resolved_home() / "llm" / f"{m.key}.server.log")
            server.start()
            entry = (server, 0)
        _shared[m.key] = (entry[0], entry[1] + 1)
    try:
        yield entry[0].endpoint()
    finally:
        with _lock:
            server, users = _shared[m.key]
            if users <= 1:
                del _shared[m.key]
                server.stop()
            else:
                _shared[m.key] = (server, users - 1)
