"""The response cache: answers to reviews seen before, behind one interface.

    cache = build_cache(settings.cache, metrics)      # LocalLRU, RedisCache or NoCache
    key = response_key(model=backend_identity, text=..., image_digest=..., options={...})
    hit = await cache.get(key)                         # a dict, or None
    await cache.put(key, answer_dict)

Backends, chosen by settings (``SHOPSENSE_CACHE__*``), never by a fork in the API:

* :class:`LocalLRU` (the default): in-process, at most ``max_entries`` answers, least recently
  used out first, each kept at most ``ttl_s``. One per API process.
* :class:`RedisCache` when ``SHOPSENSE_CACHE_URL`` (``redis://host:6379/0``, ``rediss://`` for
  TLS) is set: shared by every API replica; entries expire after ``ttl_s`` and Redis's own
  ``maxmemory-policy`` evicts under memory pressure. A Redis that is down, slow or refusing
  degrades to no cache: the call returns a miss within ``timeout_s``, the failure is counted
  (``shopsense_cache_errors_total``), and Redis is left alone for ``retry_s`` before it is
  tried again, so an outage costs no request more than one timeout. Never an error.
* :class:`NoCache` (``SHOPSENSE_CACHE__ENABLED=false`` or ``MAX_ENTRIES=0``).

Keys (:func:`response_key`) digest the backend's identity (model name, version, a digest of its
weights and the text engine: a new champion, or the same version on another engine, never
serves the old answers), the normalised text, the photo's sha256 and the request options the
answer depends on (similar reviews: k and mode). Normalisation (:func:`normalise_text`) only
folds what the model cannot see: runs of whitespace, Unicode composition (NFC) and, for an
uncased tokenizer, letter case.

Metrics (in the API's registry, so they are mirrored as Ray Serve metrics inside a replica):
``shopsense_cache_hits_total``, ``shopsense_cache_misses_total``,
``shopsense_cache_evictions_total`` (for Redis: the server's ``evicted_keys``, read at most
every ``stats_interval_s``; every replica reports the server's count, so take the max, not the
sum) and ``shopsense_cache_errors_total``, each with a ``backend`` label.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("shopsense.cache")

KEY_PREFIX = "shopsense:answer:v1:"


class CacheSettings(BaseSettings):
    """The response cache, from ``SHOPSENSE_CACHE__*`` (the Redis URL also as
    ``SHOPSENSE_CACHE_URL``, the design's "each store chosen by its URL")."""

    model_config = SettingsConfigDict(env_prefix="SHOPSENSE_CACHE__", extra="ignore",
                                      populate_by_name=True)

    enabled: bool = Field(True, description="cache answers (off: every request is computed)")
    url: str | None = Field(
        None, validation_alias=AliasChoices("SHOPSENSE_CACHE_URL", "SHOPSENSE_CACHE__URL"),
        description="redis://, rediss:// or unix:// URL of a shared Redis; unset = an "
        "in-process LRU")
    @field_validator("url")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v.strip() or None if isinstance(v, str) else v

    max_entries: int = Field(10_000, ge=0, description="in-process LRU: answers kept (0 = off)")
    ttl_s: float = Field(600.0, gt=0, description="how long an answer is served from the cache "
                         "(similar reviews change as reviews are indexed)")
    timeout_s: float = Field(0.05, gt=0, description="Redis: longest wait for one call")
    retry_s: float = Field(5.0, ge=0, description="Redis: after a failure, how long to serve "
                           "without it before trying again")
    stats_interval_s: float = Field(10.0, gt=0, description="Redis: how often the server's "
                                    "eviction count is read")


# -- keys -------------------------------------------------------------------------------------


def normalise_text(text: str | None, *, fold_case: bool = False) -> str | None:
    """The text as the model sees it: NFC, whitespace runs as one space, trimmed; lower case
    when ``fold_case`` (an uncased tokenizer lower-cases anyway). ``None`` stays ``None``."""
    if text is None:
        return None
    norm = " ".join(unicodedata.normalize("NFC", text).split())
    return norm.lower() if fold_case else norm


def image_digest(raw: bytes | None) -> str | None:
    return None if raw is None else hashlib.sha256(raw).hexdigest()


def response_key(*, model: str, text: str | None, image_sha256: str | None,
                 options: dict[str, Any] | None = None) -> str:
    """The cache key of one answer (already normalised ``text``)."""
    doc = json.dumps({"m": model, "t": text, "i": image_sha256, "o": options or {}},
                     sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return KEY_PREFIX + hashlib.sha256(doc.encode()).hexdigest()


# -- metrics ----------------------------------------------------------------------------------


class CacheMetrics(Protocol):
    """The four counters (``backend`` label), attributes of the API's ``ApiMetrics``."""

    cache_hits: Any
    cache_misses: Any
    cache_evictions: Any
    cache_errors: Any


_COUNTERS = (
    ("cache_hits", "shopsense_cache_hits_total", "Answers served from the response cache"),
    ("cache_misses", "shopsense_cache_misses_total",
     "Lookups in the response cache that found no answer (computed instead)"),
    ("cache_evictions", "shopsense_cache_evictions_total",
     "Answers pushed out of the response cache for room (for Redis: the server's count)"),
    ("cache_errors", "shopsense_cache_errors_total",
     "Response-cache calls that failed (served without the cache)"),
)


def register_metrics(metrics: Any) -> CacheMetrics:
    """Add the cache's counters to an ``ApiMetrics`` (its registry; mirrored through Ray Serve
    like every other metric of it, inside a replica). Idempotent."""
    from prometheus_client import Counter

    for attr, name, doc in _COUNTERS:
        if not hasattr(metrics, attr):
            setattr(metrics, attr, Counter(name, doc, ["backend"], registry=metrics.registry))
    return metrics


class _Counts:
    """Counters of one backend (and plain numbers, for ``stats()``)."""

    def __init__(self, metrics: CacheMetrics | None, backend: str) -> None:
        self.backend = backend
        self.hits = self.misses = self.evictions = self.errors = 0
        self._m = register_metrics(metrics) if hasattr(metrics, "registry") else metrics

    def attach(self, metrics: Any) -> None:
        """Count into ``metrics`` (an ``ApiMetrics``) from now on."""
        self._m = register_metrics(metrics)

    def _inc(self, what: str, n: int = 1) -> None:
        setattr(self, what, getattr(self, what) + n)
        if self._m is not None and n:
            getattr(self._m, f"cache_{what}").labels(self.backend).inc(n)

    def hit(self) -> None:
        self._inc("hits")

    def miss(self) -> None:
        self._inc("misses")

    def evicted(self, n: int = 1) -> None:
        self._inc("evictions", n)

    def error(self) -> None:
        self._inc("errors")

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "errors": self.errors}


# -- the interface ----------------------------------------------------------------------------


class ResponseCache(Protocol):
    """What the API needs from a cache. ``get`` and ``put`` never raise."""

    backend: str

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def put(self, key: str, value: dict[str, Any]) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class NoCache:
    backend = "off"

    async def get(self, key: str) -> dict[str, Any] | None:
        return None

    async def put(self, key: str, value: dict[str, Any]) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        return {"backend": self.backend}

    async def close(self) -> None:
        return None


class LocalLRU:
    """In-process LRU with a time to live; thread-safe, O(1) per call."""

    backend = "memory"

    def __init__(self, max_entries: int, ttl_s: float, *, metrics: CacheMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1 (use NoCache for none)")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.clock = clock
        self.counts = _Counts(metrics, self.backend)
        self._data: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    async def get(self, key: str) -> dict[str, Any] | None:
        now = self.clock()
        with self._lock:
            entry = self._data.get(key)
            if entry is not None and entry[0] <= now:  # expired: gone, not an eviction
                del self._data[key]
                entry = None
            if entry is not None:
                self._data.move_to_end(key)
        if entry is None:
            self.counts.miss()
            return None
        self.counts.hit()
        return entry[1]

    async def put(self, key: str, value: dict[str, Any]) -> None:
        evicted = 0
        with self._lock:
            self._data[key] = (self.clock() + self.ttl_s, value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
                evicted += 1
        if evicted:
            self.counts.evicted(evicted)

    def stats(self) -> dict[str, Any]:
        return {"backend": self.backend, "entries": len(self._data),
                "max_entries": self.max_entries, **self.counts.as_dict()}

    async def close(self) -> None:
        with self._lock:
            self._data.clear()


class RedisCache:
    """A shared Redis (``redis.asyncio``): JSON values with a TTL; failures are misses."""

    backend = "redis"

    def __init__(self, url: str, *, ttl_s: float, timeout_s: float = 0.05,
                 retry_s: float = 5.0, stats_interval_s: float = 10.0,
                 metrics: CacheMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.stats_interval_s = stats_interval_s
        self.clock = clock
        self.counts = _Counts(metrics, self.backend)
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry_on_timeout=False, health_check_interval=0)
        self._down_until = 0.0
        self._last_error: str | None = None
        self._evicted_seen: int | None = None
        self._stats_at = 0.0
        self._stats_task: asyncio.Task | None = None

    @property
    def available(self) -> bool:
        return self.clock() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        self.counts.error()
        first = self._down_until == 0.0 or self.available
        self._down_until = self.clock() + self.retry_s
        self._last_error = f"{type(exc).__name__}: {exc}"
        if first:
            log.warning("response cache: Redis at %s unavailable (%s); serving without it for "
                        "%.0f s", _safe_url(self.url), self._last_error, self.retry_s)

    async def _call(self, coro_fn):
        return await asyncio.wait_for(coro_fn(), self.timeout_s)

    async def get(self, key: str) -> dict[str, Any] | None:
        if not self.available:
            self.counts.miss()
            return None
        try:
            raw = await self._call(lambda: self._client.get(key))
        except Exception as exc:  # noqa: BLE001 - any Redis failure is a miss, never an error
            self._failed(exc)
            self.counts.miss()
            return None
        if raw is None:
            self.counts.miss()
            return None
        try:
            value = json.loads(raw)
        except ValueError:  # not ours, or damaged: a miss
            self.counts.miss()
            return None
        self.counts.hit()
        return value

    async def put(self, key: str, value: dict[str, Any]) -> None:
        if not self.available:
            return
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        try:
            await self._call(lambda: self._client.set(key, data, px=self.ttl_ms))
        except Exception as exc:  # noqa: BLE001 - the answer stands without the cache
            self._failed(exc)
            return
        self._maybe_read_evictions()

    def _maybe_read_evictions(self) -> None:
        now = self.clock()
        if now - self._stats_at < self.stats_interval_s:
            return
        if self._stats_task is not None and not self._stats_task.done():
            return
        self._stats_at = now
        self._stats_task = asyncio.get_running_loop().create_task(self.read_evictions())

    async def read_evictions(self) -> int:
        """Add the server's new ``evicted_keys`` since the last read to the counter."""
        try:
            info = await self._call(lambda: self._client.info("stats"))
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return 0
        total = int(info.get("evicted_keys", 0))
        new = 0 if self._evicted_seen is None else max(0, total - self._evicted_seen)
        self._evicted_seen = total
        if new:
            self.counts.evicted(new)
        return new

    def stats(self) -> dict[str, Any]:
        return {"backend": self.backend, "url": _safe_url(self.url),
                "available": self.available, "last_error": self._last_error,
                **self.counts.as_dict()}

    async def close(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
        try:
            await self._client.aclose()
        except Exception:  # noqa: BLE001, S110 - closing a dead connection
            pass


def _safe_url(url: str) -> str:
    """The URL without its password (for logs)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (
        f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def cache_metrics_for(cache: ResponseCache, metrics: Any) -> None:
    """Let a cache built before the API count into the API's metrics (``build_api``)."""
    counts = getattr(cache, "counts", None)
    if counts is not None:
        counts.attach(metrics)
    else:  # NoCache: the counters exist (at zero) all the same
        register_metrics(metrics)


def build_cache(settings: CacheSettings | None = None, metrics: Any = None) -> ResponseCache:
    """The cache the settings describe (default: from the environment); ``metrics`` is the
    API's ``ApiMetrics`` (the counters are added to it) or ``None``."""
    settings = settings if settings is not None else CacheSettings()
    if metrics is not None:
        metrics = register_metrics(metrics)
    if not settings.enabled:
        return NoCache()
    if settings.url:
        if not settings.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"SHOPSENSE_CACHE_URL must be redis://, rediss:// or unix://, "
                             f"got {_safe_url(settings.url)!r}")
        return RedisCache(settings.url, ttl_s=settings.ttl_s, timeout_s=settings.timeout_s,
                          retry_s=settings.retry_s, stats_interval_s=settings.stats_interval_s,
                          metrics=metrics)
    if settings.max_entries == 0:
        return NoCache()
    return LocalLRU(settings.max_entries, settings.ttl_s, metrics=metrics)
