"""SSRF-safe download of an image URL.

Every hop (the URL and each redirect) is checked the same way: http(s) only, the host is
resolved once, every resolved address must be public (or allowed by ``allow_hosts``), and the
connection goes to that validated address (the URL's host travels in ``Host`` and TLS SNI, and
the certificate is still verified against the host name), so a second DNS answer cannot
redirect the request (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from shopsense.errors import ImageFetchFailed, ImageFetchRefused, Overloaded, PayloadTooLarge
from shopsense.settings import ImageSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

USER_AGENT = "shopsense-image-fetch/1"
_ORIGIN = re.compile(r"^(?:\[([0-9a-f:.]+)\]|([^:\[\]]+)):(\d{1,5})$")
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

# Instance-metadata and host-agent endpoints of the common clouds. They are refused even when
# a *host name* is allow-listed; only an allow-listed address/CIDR covering them lets them pass.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
        "169.254.169.253",  # AWS VPC DNS
        "169.254.169.123",  # AWS time sync
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.170.23",  # AWS EKS pod identity
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",  # AWS VPC DNS over IPv6
        "fd00:ec2::23",  # AWS EKS pod identity over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
        "168.63.129.16",  # Azure wire server (a public-looking address)
    )
)

# Ranges that ``ipaddress`` does not flag consistently across Python versions.
_EXTRA_BLOCKED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), reason)
    for net, reason in (
        ("0.0.0.0/8", "unspecified"),  # "this network": 0.x connects to the local host on Linux
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("192.0.0.0/24", "reserved"),
        ("198.18.0.0/15", "reserved"),
        ("240.0.0.0/4", "reserved"),
        ("fec0::/10", "site-local"),
        ("64:ff9b:1::/48", "reserved"),
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_block_reason(address: str | IPAddress) -> str | None:
    """Why ``address`` must not be fetched from (e.g. ``"loopback"``), or ``None`` if public.

    IPv6 forms that carry an IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by that
    IPv4 address as well.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d on a dual-stack socket
            return address_block_reason(ip.ipv4_mapped)
        if ip in _NAT64:  # 64:ff9b::a.b.c.d reaches a.b.c.d through a NAT64 gateway
            return address_block_reason(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            inner = address_block_reason(ip.sixtofour)
            if inner is not None:
                return inner
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    for net, reason in _EXTRA_BLOCKED:
        if ip.version == net.version and ip in net:
            return reason
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non-public"
    return None


def is_public_address(address: str | IPAddress) -> bool:
    """True when ``address`` is a public unicast address safe to fetch from."""
    return address_block_reason(address) is None


@dataclass(frozen=True)
class AllowList:
    """``ImageSettings.allow_hosts`` parsed: exact host names, ``*.suffix`` wildcards, CIDRs,
    and ``host:port`` / ``[v6]:port`` origins (that host on that port only)."""

    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = field(default=())
    origins: frozenset[tuple[str, int]] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        hosts: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        origins: set[tuple[str, int]] = set()
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            origin = _ORIGIN.match(entry)
            if origin is not None:
                origins.add((_normalise_host(origin.group(1) or origin.group(2)),
                             int(origin.group(3))))
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if entry.startswith("*."):
                suffixes.append(entry[1:])  # ".example.com"
            else:
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(suffixes), tuple(networks), frozenset(origins))

    def origin_allowed(self, host: str, port: int | None) -> bool:
        return port is not None and (_normalise_host(host), port) in self.origins

    def host_allowed(self, host: str) -> bool:
        name = _normalise_host(host)
        return name in self.hosts or any(name.endswith(s) for s in self.suffixes)

    def address_allowed(self, ip: IPAddress) -> bool:
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c.version == n.version and c in n for c in candidates for n in self.networks)


def check_address(ip: IPAddress, *, host: str, allow: AllowList, port: int | None = None) -> None:
    """Raise ``ImageFetchRefused`` unless ``ip`` may be fetched from for ``host`` (on ``port``)."""
    reason = address_block_reason(ip)
    if reason is None or allow.address_allowed(ip) or allow.origin_allowed(str(ip), port):
        return
    named = allow.host_allowed(host) or allow.origin_allowed(host, port)
    if named and reason != "cloud metadata":
        return
    shown = f" ({ip})" if _is_ip_literal(host) else ""
    raise ImageFetchRefused(
        f"image URL host {host!r} is not allowed: it resolves to a {reason} address{shown}"
    )


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """All addresses ``host`` resolves to, in resolver order (IP literals resolve to
    themselves). Raises ``ImageFetchFailed`` when the name does not resolve."""
    literal = _parse_ip(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise ImageFetchFailed(f"could not resolve host {host!r}") from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = _parse_ip(str(sockaddr[0]))
        if ip is not None and ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise ImageFetchFailed(f"could not resolve host {host!r}: no addresses")
    return addresses


def fetch_image(
    url: str, settings: ImageSettings, *, transport: httpx.BaseTransport | None = None,
    check_url: Callable[[httpx.URL], None] | None = None, user_agent: str = USER_AGENT,
) -> bytes:
    """Download ``url`` under ``settings`` limits and return the body bytes.

    ``transport`` replaces the network transport (tests, custom TLS); it receives requests
    already pinned to the validated address and is not closed here. ``check_url`` is called
    with the URL and every redirect target before it is requested, and raises
    ``ImageFetchRefused`` to stop there (the scraper's robots.txt check). No redirect is
    followed without the same checks as the first URL.
    Raises ``ImageFetchRefused``, ``ImageFetchFailed`` (with the server's ``status`` and
    ``retry_after_s`` when it answered an error) or ``PayloadTooLarge``.
    """
    return safe_get(url, settings, transport=transport, check_url=check_url,
                    user_agent=user_agent, accept="image/*")


def safe_get(
    url: str, settings: ImageSettings, *, accept: str, transport: httpx.BaseTransport | None = None,
    check_url: Callable[[httpx.URL], None] | None = None, user_agent: str = USER_AGENT,
) -> bytes:
    """``fetch_image`` for any body (the scraper's robots.txt of a photo host): the same SSRF
    guard, redirect checks, size cap and deadline, with ``Accept: accept``."""
    job = _FetchJob(_parse_url(url), settings, transport, check_url, user_agent, accept)
    # DNS has no timeout and httpx's are per operation, so the whole fetch runs in a worker
    # and the caller waits at most ``fetch_timeout_s``; on expiry the open socket is shut down
    # and the worker ends within its own per-operation timeouts.
    worker = threading.Thread(target=job.run, name="shopsense-image-fetch", daemon=True)
    worker.start()
    if not job.done.wait(settings.fetch_timeout_s):
        job.abort()
        raise _timed_out(job.current, settings.fetch_timeout_s)
    if job.error is not None:
        raise job.error
    return job.body


class _FetchJob:
    """One fetch, run on a worker thread; the caller reads ``body`` or ``error``."""

    def __init__(
        self, url: httpx.URL, settings: ImageSettings, transport: httpx.BaseTransport | None,
        check_url: Callable[[httpx.URL], None] | None = None, user_agent: str = USER_AGENT,
        accept: str = "image/*",
    ) -> None:
        self.check_url = check_url
        self.user_agent = user_agent
        self.accept = accept
        self.current = url
        self.settings = settings
        self.transport = transport
        self.deadline = time.monotonic() + settings.fetch_timeout_s
        self.allow = AllowList.parse(settings.allow_hosts)
        self.done = threading.Event()
        self.body = b""
        self.error: BaseException | None = None
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None

    def run(self) -> None:
        try:
            self.body = self._fetch()
        except BaseException as exc:  # handed to the calling thread
            self.error = exc
        finally:
            self.done.set()

    def abort(self) -> None:
        """Stop the worker: flag it and shut the socket it may be blocked reading from."""
        self._cancelled.set()
        with self._lock:
            sock = self._socket
        if sock is not None:
            # the plain-socket shutdown, also for TLS sockets: it wakes a blocked read
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _fetch(self) -> bytes:
        settings = self.settings
        transport = self.transport or httpx.HTTPTransport(trust_env=False, retries=0)
        client = httpx.Client(transport=transport, trust_env=False, follow_redirects=False)
        redirects = 0
        try:
            while True:
                response = self._send(client, self.current)
                try:
                    if response.status_code in _REDIRECT_STATUSES:
                        location = response.headers.get("location")
                        if not location:
                            raise ImageFetchFailed(
                                f"image URL returned HTTP {response.status_code} without a Location"
                            )
                        redirects += 1
                        if redirects > settings.max_redirects:
                            raise ImageFetchFailed(
                                "too many redirects fetching image "
                                f"(limit {settings.max_redirects})"
                            )
                        self.current = _parse_url(location, base=self.current)
                        continue
                    if not 200 <= response.status_code < 300:
                        raise ImageFetchFailed(
                            f"image URL returned HTTP {response.status_code} "
                            f"{response.reason_phrase}".rstrip(),
                            status=response.status_code,
                            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
                        )
                    return self._read_body(response)
                finally:
                    response.close()
        except httpx.TimeoutException as exc:
            raise _timed_out(self.current, settings.fetch_timeout_s) from exc
        except httpx.HTTPError as exc:
            if self._cancelled.is_set():
                raise _timed_out(self.current, settings.fetch_timeout_s) from exc
            raise ImageFetchFailed(
                f"could not fetch image from {_host(self.current)!r}: {_one_line(exc)}"
            ) from exc
        finally:
            if self.transport is None:
                client.close()

    def _send(self, client: httpx.Client, url: httpx.URL) -> httpx.Response:
        """One validated, address-pinned GET; the response is streamed (not yet read)."""
        host = _host(url)
        port = url.port or (443 if url.scheme == "https" else 80)
        self._check_time()
        if self.check_url is not None:
            self.check_url(url)
        addresses = resolve_host(host, port)
        for ip in addresses:  # every answer must pass, not just the one we use
            check_address(ip, host=host, allow=self.allow, port=port)
        try:
            pinned = url.copy_with(host=str(addresses[0]), fragment=None)
        except httpx.InvalidURL as exc:  # e.g. a scoped IPv6 address
            raise ImageFetchFailed(f"cannot connect to {host!r}: {_one_line(exc)}") from exc
        request = client.build_request(
            "GET",
            pinned,
            headers={
                "Host": url.netloc.decode("ascii"),
                "User-Agent": self.user_agent,
                "Accept": self.accept,
                "Accept-Encoding": "identity",
            },
            timeout=httpx.Timeout(self._check_time()),
            extensions={"sni_hostname": host} if url.scheme == "https" else {},
        )
        response = client.send(request, stream=True)
        stream = response.extensions.get("network_stream")
        with self._lock:
            self._socket = stream.get_extra_info("socket") if stream is not None else None
        if self._cancelled.is_set():
            self.abort()
        return response

    def _read_body(self, response: httpx.Response) -> bytes:
        max_bytes = self.settings.max_bytes
        declared = response.headers.get("content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError as exc:
                raise ImageFetchFailed(f"invalid Content-Length {declared!r}") from exc
            if length > max_bytes:
                raise PayloadTooLarge(f"image is {length} bytes; the limit is {max_bytes}")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ImageFetchFailed(f"unsupported Content-Encoding {encoding!r} for an image")
        body = bytearray()
        for chunk in response.iter_bytes():  # identity only (checked above), so raw bytes
            body += chunk
            if len(body) > max_bytes:
                raise PayloadTooLarge(f"image is over the {max_bytes}-byte limit")
            self._check_time()
        return bytes(body)

    def _check_time(self) -> float:
        """Seconds left; raises the timeout error when none are (or the caller gave up)."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or self._cancelled.is_set():
            raise _timed_out(self.current, self.settings.fetch_timeout_s)
        return remaining


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date), or
    ``None`` when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class ImageFetcher:
    """URL fetches for one API replica, bounded on their own thread pool.

    At most ``fetch_threads`` fetches run at once and ``fetch_queue`` wait; past that a request
    with URLs is refused at once with ``Overloaded`` (503), so slow image servers can never
    hold the threads that decode other callers' base64 images. Each request fetches at most
    ``fetch_per_request`` URLs at once, all of them within ``fetch_deadline_s``
    (:meth:`session`).
    """

    def __init__(self, settings: ImageSettings, *, retry_after_s: float = 1.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self.retry_after_s = retry_after_s
        self.transport = transport
        self.executor = ThreadPoolExecutor(settings.fetch_threads,
                                           thread_name_prefix="shopsense-fetch")
        self._waiting = 0  # submitted to the pool and not finished (running or queued)
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self._waiting

    def _finished(self, _future) -> None:
        with self._lock:
            self._waiting -= 1

    def session(self) -> FetchSession:
        return FetchSession(self)

    async def fetch(self, url: str) -> bytes:
        with self._lock:
            busy = self._waiting >= self.settings.fetch_threads + self.settings.fetch_queue
            if not busy:
                self._waiting += 1
        if busy:
            raise Overloaded("too many image URL fetches in progress; try again shortly or "
                             "send the image as base64", retry_after_s=self.retry_after_s)
        # Counted until the worker is done, even when the caller stops waiting (a fetch that
        # already started runs to its own timeout): the bound is on threads really in use.
        future = self.executor.submit(fetch_image, url, self.settings, transport=self.transport)
        future.add_done_callback(self._finished)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class FetchSession:
    """One request's fetches: ``fetch_per_request`` at once, all within ``fetch_deadline_s``."""

    def __init__(self, fetcher: ImageFetcher) -> None:
        self.fetcher = fetcher
        self.slots = asyncio.Semaphore(fetcher.settings.fetch_per_request)
        self.deadline = time.monotonic() + fetcher.settings.fetch_deadline_s

    async def fetch(self, url: str) -> bytes:
        limit = self.fetcher.settings.fetch_deadline_s
        try:
            async with asyncio.timeout_at(_loop_deadline(self.deadline)):
                async with self.slots:
                    return await self.fetcher.fetch(url)
        except TimeoutError:
            raise ImageFetchFailed(
                f"the request's image URLs took longer than {limit:g}s to fetch") from None


def _loop_deadline(monotonic_deadline: float) -> float:
    """A ``time.monotonic`` deadline on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())


def _timed_out(url: httpx.URL, timeout_s: float) -> ImageFetchFailed:
    return ImageFetchFailed(f"timed out fetching image from {_host(url)!r} (limit {timeout_s:g}s)")


def _parse_url(value: str, *, base: httpx.URL | None = None) -> httpx.URL:
    try:
        url = base.join(value) if base is not None else httpx.URL(value)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise ImageFetchRefused(f"invalid image URL: {_one_line(exc)}") from exc
    if url.scheme not in ("http", "https"):
        raise ImageFetchRefused(
            f"image URL scheme {url.scheme or '(none)'!r} is not allowed; use http or https"
        )
    if not url.raw_host:
        raise ImageFetchRefused("image URL has no host")
    if url.userinfo:
        raise ImageFetchRefused("image URL must not contain credentials")
    return url


def _host(url: httpx.URL) -> str:
    return url.raw_host.decode("ascii").lower()


def _normalise_host(host: str) -> str:
    return host.strip().lower().rstrip(".").strip("[]")


def _parse_ip(value: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return None


def _is_ip_literal(host: str) -> bool:
    return _parse_ip(host) is not None


def _one_line(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:200]
