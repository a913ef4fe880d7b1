"""What every request meets before the API works on it (one pure-ASGI middleware,
``RequestGuard``), cheapest check first:

1. a request id (the client's ``X-Request-Id`` when it is short and plain, else a new one), in
   the response header, every error body and every log line about the request;
2. on ``/v1/`` routes: the API key (``KeyRing``; 401), the key's token bucket
   (``RateLimiter``; 429 with ``Retry-After``), and admission (at most ``max_in_flight``
   requests at once per replica; past it 503 with ``Retry-After`` at once, never a queue);
3. the body, read as it streams in and stopped at the first byte over ``max_body_bytes``
   (413, declared or chunked), within ``body_timeout_s`` (408);
4. a structure budget per route (``JsonBudget``): containers and commas counted outside JSON
   strings, a linear scan in C, so 300k batch items are refused before anything is parsed;
5. then the app, with every exception that escapes it answered by ``errors.error_response``
   (the catch-all: no plain-text 500, no traceback in a body).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shopsense.errors import (
    DataError,
    InvalidInput,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)

from services.inference.errors import REQUEST_ID_HEADER, BodyTimeout, error_response

log = logging.getLogger("shopsense.api")

ANONYMOUS = "anonymous"  # the key name of requests when auth is off
UNKNOWN_KEY = "unknown"  # a request whose key was missing or wrong
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
# A JSON string, escapes included (the unrolled form: linear, no backtracking).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def state_of(scope) -> dict:
    """The per-request state Starlette exposes as ``request.state``."""
    return scope.setdefault("state", {})


# ------------------------------------------------------------------------------------ keys


class KeyRing:
    """API keys from a file of ``NAME:SHA256_HEX_OF_KEY`` lines (``#`` comments, blank lines).

    Only digests are held; a presented key is hashed and looked up, so neither the file nor
    memory holds a usable key. The file is re-read when its modification time changes (checked
    at most every ``reload_s``), so a rotated Secret takes effect without a restart; a file
    that no longer parses keeps the previous keys and logs why."""

    def __init__(self, path: Path, *, reload_s: float = 5.0) -> None:
        self.path = Path(path)
        self.reload_s = reload_s
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._mtime, self._names = self._read()

    @staticmethod
    def parse(text: str, source: str = "keys file") -> dict[str, str]:
        """``{sha256 hex: name}``; raises ``DataError`` naming the first bad line."""
        names: dict[str, str] = {}
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, digest = line.partition(":")
            name, digest = name.strip(), digest.strip().lower()
            if not sep or not _KEY_NAME.match(name) or not _HEX64.match(digest):
                raise DataError(f"{source}: line {n} is not NAME:SHA256_HEX (NAME of letters, "
                                "digits, '._-'; 64 hex digits)")
            if digest in names:
                raise DataError(f"{source}: line {n}: the same key digest as {names[digest]!r}")
            names[digest] = name
        if not names:
            raise DataError(f"{source}: no keys (every /v1/ request would be refused)")
        return names

    def _read(self) -> tuple[float, dict[str, str]]:
        try:
            mtime = self.path.stat().st_mtime
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DataError(f"cannot read the API keys file {self.path}: "
                            f"{exc.strerror or exc}") from exc
        return mtime, self.parse(text, str(self.path))

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.reload_s:
            return
        with self._lock:
            if now - self._checked < self.reload_s:
                return
            self._checked = now
            try:
                if self.path.stat().st_mtime == self._mtime:
                    return
                self._mtime, self._names = self._read()
                log.info("API keys reloaded from %s: %d keys", self.path, len(self._names))
            except DataError as exc:
                log.error("API keys not reloaded (keeping the previous ones): %s", exc)
            except OSError as exc:
                log.error("API keys not reloaded (keeping the previous ones): %s", exc)

    @property
    def names(self) -> list[str]:
        return sorted(self._names.values())

    def name_for(self, key: str) -> str | None:
        self._maybe_reload()
        return self._names.get(hashlib.sha256(key.encode("utf-8")).hexdigest())


def bearer_key(scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            try:
                text = value.decode("latin-1").strip()
            except UnicodeDecodeError:
                return None
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


# ------------------------------------------------------------------------------ rate limits


class RateLimiter:
    """Token buckets by name: ``rate`` tokens a second up to ``burst``; a request takes one.
    At most ``max_buckets`` are kept (least recently used dropped: a dropped bucket is full)."""

    def __init__(self, *, max_buckets: int = 10_000, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.max_buckets = max_buckets
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, name: str, rate: float, burst: int) -> float:
        """0.0 when a token was taken, else the seconds until one is there."""
        if rate <= 0:
            return 0.0
        now = self.clock()
        tokens, last = self._buckets.pop(name, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        if tokens >= 1.0:
            self._buckets[name] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[name] = (tokens, now)
            wait = (1.0 - tokens) / rate
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)
        return wait


# ---------------------------------------------------------------------------- body budget


@dataclass(frozen=True)
class JsonBudget:
    """How much JSON structure a route's body may have: ``{``/``[`` and ``,`` outside strings.

    ``too_many`` builds the error for a body over it (for the batch route, a 413 that names
    the item limit)."""

    max_containers: int
    max_commas: int
    too_many: Callable[[int, int], Exception] | None = None

    def check(self, body: bytes) -> None:
        if not body:
            return
        skeleton = _JSON_STRING.sub(b'""', body)
        containers = skeleton.count(b"{") + skeleton.count(b"[")
        commas = skeleton.count(b",")
        if containers <= self.max_containers and commas <= self.max_commas:
            return
        if self.too_many is not None:
            raise self.too_many(containers, commas)
        raise InvalidInput(f"the request body has more JSON structure than this route accepts "
                           f"({containers} objects/arrays, {commas} commas); see /docs")


# ------------------------------------------------------------------------------ the guard


class RequestGuard:
    """The pure-ASGI middleware described in the module docstring."""

    def __init__(self, app, *, settings, metrics, keyring: KeyRing | None,
                 budgets: dict[str, JsonBudget] | None = None,
                 limiter: RateLimiter | None = None, echo_request_id: bool = True) -> None:
        self.app = app
        # Behind Ray Serve's proxy the id is the proxy's (it sets X-Request-Id on the request,
        # from the client's or a new one, and adds it to the response itself)
        self.echo_request_id = echo_request_id
        self.settings = settings
        self.metrics = metrics
        self.keyring = keyring
        self.budgets = budgets or {}
        self.limiter = limiter or RateLimiter()
        self.in_flight = 0

    # -- checks

    def _key(self, scope) -> str:
        if self.keyring is None:
            return ANONYMOUS
        key = bearer_key(scope)
        if key is None:
            raise Unauthorized("this API needs an API key: send 'Authorization: Bearer KEY'")
        name = self.keyring.name_for(key)
        if name is None:
            raise Unauthorized("the API key is not valid")
        return name

    def _rate(self, scope, key: str) -> None:
        auth = self.settings.auth
        if key == ANONYMOUS:
            rate, burst = auth.anonymous_rate_per_s, auth.burst
            client = scope.get("client")
            bucket = f"{ANONYMOUS}@{client[0] if client else '?'}"
        else:
            rate, burst, bucket = auth.key_rates.get(key, auth.rate_per_s), auth.burst, key
        wait = self.limiter.take(bucket, rate, burst)
        if wait > 0:
            raise RateLimited(f"key {key!r} is over its rate limit of {rate:g} requests/s "
                              f"(burst {burst}); retry after {wait:.2f}s", retry_after_s=wait)

    async def _read_body(self, scope, receive) -> bytes:
        declared = None
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                declared = value
        limit = self.settings.serve.max_body_bytes
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"request body is {int(declared)} bytes; the limit is {limit}")
        chunks: list[bytes] = []
        seen = 0
        try:
            async with asyncio.timeout(self.settings.serve.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise asyncio.CancelledError("client disconnected")
                    chunk = message.get("body", b"")
                    seen += len(chunk)
                    if seen > limit:
                        raise PayloadTooLarge(f"request body over {limit} bytes")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise BodyTimeout(f"the request body did not arrive within "
                              f"{self.settings.serve.body_timeout_s:g}s") from None
        return b"".join(chunks)

    # -- ASGI

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = state_of(scope)
        rid = None
        for name, value in scope.get("headers") or ():
            if name == REQUEST_ID_HEADER.encode():
                text = value.decode("latin-1")
                rid = text if _SAFE_ID.match(text) else None
        rid = rid or uuid.uuid4().hex
        state["request_id"] = rid
        state["started"] = time.monotonic()
        path = scope.get("path", "")
        started = False

        async def send_with_id(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                name = REQUEST_ID_HEADER.encode()
                headers = [(k, v) for k, v in message.get("headers") or [] if k.lower() != name]
                if self.echo_request_id:  # (behind Serve, its proxy adds the same id)
                    headers.append((name, rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        admitted = False
        try:
            if path.startswith("/v1/"):
                state["key"] = UNKNOWN_KEY
                state["key"] = key = self._key(scope)
                self._rate(scope, key)
                if self.in_flight >= self.settings.serve.max_in_flight:
                    raise Overloaded(f"the service is at its limit of "
                                     f"{self.settings.serve.max_in_flight} requests in flight; "
                                     "try again shortly",
                                     retry_after_s=self.settings.serve.retry_after_s)
                self.in_flight += 1
                admitted = True
                if scope.get("method") in ("POST", "PUT", "PATCH"):
                    body = await self._read_body(scope, receive)
                    budget = self.budgets.get(path)
                    if budget is not None:
                        budget.check(body)
                    receive = _replay(body, receive)
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the catch-all: every error is answered
            if started:  # too late for an error response: the client sees a cut answer
                log.error("request %s failed after its response started", rid, exc_info=exc)
                return
            response = error_response(exc, request_id=rid, key=state.get("key"), route=path,
                                      metrics=self.metrics)
            await response(scope, receive, send)
        finally:
            if admitted:
                self.in_flight -= 1


def _replay(body: bytes, receive):
    """A ``receive`` that hands the app the already-read body, then the client's messages
    (disconnects)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def keyring_from_settings(settings) -> KeyRing | None:
    path = settings.auth.keys_file
    if path is None or not str(path).strip():
        return None
    return KeyRing(Path(os.path.expanduser(str(path))), reload_s=settings.auth.reload_s)
