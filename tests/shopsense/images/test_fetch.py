from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from shopsense.errors import ImageFetchFailed, ImageFetchRefused, PayloadTooLarge
from shopsense.images import AllowList, address_block_reason, fetch_image, is_public_address
from shopsense.images.fetch import check_address
from shopsense.settings import ImageSettings

from .conftest import ImageServer, png_bytes

FakeDNS = Callable[[dict[str, list[str]]], list[str]]

LOCAL = ImageSettings(allow_hosts=["127.0.0.1"], fetch_timeout_s=2.0)


# ------------------------------------------------------------------ address classifier


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.0.0.1", "private"),
        ("10.255.255.255", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("169.254.1.1", "link-local"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.170.2", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("168.63.129.16", "cloud metadata"),
        ("192.0.0.192", "cloud metadata"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("100.127.255.254", "shared (CGNAT)"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "reserved"),
        ("240.0.0.1", "reserved"),
        ("198.18.0.1", "reserved"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fec0::1", "site-local"),
        ("2001:db8::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("fe80::1%eth0", "link-local"),
    ],
)
def test_blocked_addresses(address: str, reason: str) -> None:
    assert address_block_reason(address) == reason
    assert not is_public_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "172.32.0.1",
        "100.128.0.1",
        "192.169.0.1",
    ],
)
def test_public_addresses(address: str) -> None:
    assert address_block_reason(address) is None
    assert is_public_address(ipaddress.ip_address(address))


def test_allow_list_parsing_and_matching() -> None:
    allow = AllowList.parse(["CDN.Example.com.", "*.img.test", "10.1.0.0/16", "::1", " "])
    assert allow.host_allowed("cdn.example.com") and allow.host_allowed("CDN.EXAMPLE.COM.")
    assert allow.host_allowed("a.b.img.test") and not allow.host_allowed("img.test")
    assert not allow.host_allowed("example.com")
    assert allow.address_allowed(ipaddress.ip_address("10.1.2.3"))
    assert allow.address_allowed(ipaddress.ip_address("::ffff:10.1.2.3"))
    assert allow.address_allowed(ipaddress.ip_address("::1"))
    assert not allow.address_allowed(ipaddress.ip_address("10.2.0.1"))


def test_metadata_needs_an_address_allow_entry_not_just_a_host_name() -> None:
    metadata = ipaddress.ip_address("169.254.169.254")
    with pytest.raises(ImageFetchRefused, match="metadata"):
        check_address(metadata, host="meta.test", allow=AllowList.parse(["meta.test"]))
    check_address(metadata, host="meta.test", allow=AllowList.parse(["169.254.169.254"]))
    # an allowed host name does let private addresses through
    check_address(
        ipaddress.ip_address("10.0.0.5"),
        host="intranet.test",
        allow=AllowList.parse(["intranet.test"]),
    )


# ------------------------------------------------------------------ URL and DNS checks


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "gopher://x/",
        "javascript:alert(1)",
        "//example.com/a.png",
        "http:///nohost",
        "http://user:pw@example.com/a.png",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ImageFetchRefused):
        fetch_image(url, ImageSettings())


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.png",
        "http://[::1]/x.png",
        "http://169.254.169.254/latest/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "https://10.0.0.1/",
    ],
)
def test_literal_private_addresses_are_refused(url: str) -> None:
    with pytest.raises(ImageFetchRefused, match="not allowed"):
        fetch_image(url, ImageSettings())


def test_public_looking_host_resolving_private_is_refused(fake_dns: FakeDNS) -> None:
    lookups = fake_dns({"cdn.shop.example": ["10.0.0.1"]})
    with pytest.raises(ImageFetchRefused, match="private") as info:
        fetch_image("https://cdn.shop.example/p.jpg", ImageSettings())
    assert "10.0.0.1" not in str(info.value)  # no internal DNS answers leak to the client
    assert lookups == ["cdn.shop.example"]


def test_any_private_answer_refuses(fake_dns: FakeDNS) -> None:
    fake_dns({"mixed.example": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(ImageFetchRefused, match="loopback"):
        fetch_image("http://mixed.example/p.jpg", ImageSettings())


def test_ipv4_mapped_dns_answer_is_refused(fake_dns: FakeDNS) -> None:
    fake_dns({"v6.example": ["::ffff:169.254.169.254"]})
    with pytest.raises(ImageFetchRefused, match="metadata"):
        fetch_image("http://v6.example/", ImageSettings())


def test_dns_failure_is_fetch_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(ImageFetchFailed, match="resolve"):
        fetch_image("http://no-such-host.invalid/x.png", ImageSettings())


def test_dns_timeout_counts_against_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    def hang(*args: object, **kwargs: object) -> None:
        time.sleep(20.0)

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    start = time.monotonic()
    with pytest.raises(ImageFetchFailed, match="timed out"):
        fetch_image("http://slow-dns.example/x.png", ImageSettings(fetch_timeout_s=0.2))
    # Generous bound (shared, noisy machines): the point is not waiting the 20 s DNS hang.
    assert time.monotonic() - start < 10


def test_request_is_pinned_to_the_validated_address(fake_dns: FakeDNS) -> None:
    """The transport sees the IP in the URL, the host name in Host and SNI."""
    fake_dns({"cdn.shop.example": ["93.184.216.34"]})
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"img")

    body = fetch_image(
        "https://cdn.shop.example:8443/a/p.jpg?v=1#frag",
        ImageSettings(),
        transport=httpx.MockTransport(handler),
    )
    assert body == b"img"
    (request,) = seen
    assert request.url.host == "93.184.216.34" and request.url.port == 8443
    assert request.url.raw_path == b"/a/p.jpg?v=1"
    assert request.headers["host"] == "cdn.shop.example:8443"
    assert request.extensions["sni_hostname"] == "cdn.shop.example"


# ------------------------------------------------------------------ real server on 127.0.0.1


def test_fetch_from_allowed_loopback(image_server: ImageServer) -> None:
    assert fetch_image(image_server.url("/img.png"), LOCAL) == png_bytes()
    path, headers = image_server.seen[-1]
    assert path == "/img.png"
    assert headers["Host"] == f"127.0.0.1:{image_server.port}"
    assert headers["Accept-Encoding"] == "identity"


def test_loopback_refused_without_allow_list(image_server: ImageServer) -> None:
    with pytest.raises(ImageFetchRefused, match="loopback"):
        fetch_image(image_server.url("/img.png"), ImageSettings())
    assert image_server.seen == []  # refused before connecting


def test_allowed_host_name_is_sent_as_host_header(
    image_server: ImageServer, fake_dns: FakeDNS
) -> None:
    fake_dns({"images.shop.test": ["127.0.0.1"]})
    settings = ImageSettings(allow_hosts=["images.shop.test"])
    assert fetch_image(image_server.url("/img.png", host="images.shop.test"), settings)
    assert image_server.seen[-1][1]["Host"] == f"images.shop.test:{image_server.port}"


def test_dns_rebinding_cannot_switch_the_address(
    image_server: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolved once: a second (rebinding) answer would point at 10.0.0.1, never used."""
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1", "10.0.0.1", "10.0.0.1"])
    lookups: list[str] = []

    def rebinding(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == "rebind.test":
            address = next(answers)
            lookups.append(address)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    settings = ImageSettings(allow_hosts=["127.0.0.0/8"], fetch_timeout_s=2.0)
    assert fetch_image(image_server.url("/img.png", host="rebind.test"), settings) == png_bytes()
    assert lookups == ["127.0.0.1"]


def test_redirects_are_followed(image_server: ImageServer) -> None:
    for status in (301, 302, 303, 307, 308):
        url = image_server.url(f"/redirect?status={status}&to=/img.png")
        assert fetch_image(url, LOCAL) == png_bytes()
    assert fetch_image(image_server.url("/chain?n=3"), LOCAL) == png_bytes()  # 3 redirects


def test_too_many_redirects(image_server: ImageServer) -> None:
    settings = ImageSettings(allow_hosts=["127.0.0.1"], max_redirects=3)
    assert fetch_image(image_server.url("/chain?n=3"), settings)  # exactly 3 redirects
    with pytest.raises(ImageFetchFailed, match="too many redirects"):
        fetch_image(image_server.url("/chain?n=4"), settings)
    with pytest.raises(ImageFetchFailed, match="too many redirects"):
        fetch_image(image_server.url("/chain?n=2"), LOCAL.model_copy(update={"max_redirects": 0}))


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://127.0.0.2:{port}/img.png", "loopback"),
        ("http://[::1]:{port}/img.png", "loopback"),
        ("http://[::ffff:127.0.0.2]:{port}/img.png", "loopback"),
        ("http://100.100.100.200/latest/meta-data/", "metadata"),
        ("http://internal.shop.example/img.png", "private"),
        ("file:///etc/passwd", "scheme"),
    ],
)
def test_redirect_hops_are_revalidated(
    image_server: ImageServer, fake_dns: FakeDNS, target: str, reason: str
) -> None:
    fake_dns({"internal.shop.example": ["192.168.0.10"]})
    location = target.format(port=image_server.port)
    url = image_server.url(
        "/redirect?to=" + httpx.URL("", params={"x": location}).query.decode()[2:]
    )
    with pytest.raises(ImageFetchRefused, match=reason):
        fetch_image(url, LOCAL)
    assert len(image_server.seen) == 1  # only the first hop reached the server


def test_redirect_without_location_fails(image_server: ImageServer) -> None:
    with pytest.raises(ImageFetchFailed, match="Location"):
        fetch_image(image_server.url("/no-location"), LOCAL)


def test_oversized_body_with_content_length(image_server: ImageServer) -> None:
    settings = LOCAL.model_copy(update={"max_bytes": 1000})
    with pytest.raises(PayloadTooLarge, match="1000"):
        fetch_image(image_server.url("/big?n=5000"), settings)
    assert fetch_image(image_server.url("/big?n=1000"), settings) == b"\0" * 1000


def test_oversized_body_without_content_length_aborts_early(image_server: ImageServer) -> None:
    settings = LOCAL.model_copy(update={"max_bytes": 100_000})
    start = time.monotonic()
    with pytest.raises(PayloadTooLarge):
        fetch_image(image_server.url("/big-unsized?n=50000000"), settings)  # 50 MB offered
    assert time.monotonic() - start < 10


def test_slow_server_times_out(image_server: ImageServer) -> None:
    settings = LOCAL.model_copy(update={"fetch_timeout_s": 0.3})
    start = time.monotonic()
    with pytest.raises(ImageFetchFailed, match="timed out"):
        fetch_image(image_server.url("/slow?s=30"), settings)
    assert time.monotonic() - start < 10  # not the server's 30 s


def test_trickling_body_is_bounded_by_the_total_budget(image_server: ImageServer) -> None:
    settings = LOCAL.model_copy(update={"fetch_timeout_s": 0.4})
    start = time.monotonic()
    with pytest.raises(ImageFetchFailed, match="timed out"):
        fetch_image(image_server.url("/trickle"), settings)  # 1000 bytes at 20/s: 50 s
    assert time.monotonic() - start < 10  # the total budget, not 50 s of trickle


def test_a_late_stall_is_cut_at_the_total_budget(image_server: ImageServer) -> None:
    settings = LOCAL.model_copy(update={"fetch_timeout_s": 0.6})
    before = set(threading.enumerate())
    with pytest.raises(ImageFetchFailed, match="timed out"):
        fetch_image(image_server.url("/stall?after=0.4"), settings)
    # the worker's socket was shut down, so it does not linger on its own read timeout
    workers = [t for t in set(threading.enumerate()) - before if "image-fetch" in t.name]
    for worker in workers:
        worker.join(timeout=0.3)
        assert not worker.is_alive()


def test_not_found_fails(image_server: ImageServer) -> None:
    with pytest.raises(ImageFetchFailed, match="404"):
        fetch_image(image_server.url("/missing.png"), LOCAL)


def test_compressed_response_is_refused(image_server: ImageServer) -> None:
    with pytest.raises(ImageFetchFailed, match="Content-Encoding"):
        fetch_image(image_server.url("/gzip"), LOCAL)


def test_connection_refused_fails() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens here
    with pytest.raises(ImageFetchFailed, match="could not fetch"):
        fetch_image(f"http://127.0.0.1:{port}/x.png", LOCAL)


# ------------------------------------------------------------------ TLS: pinned IP, real name


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, list[str | None]]]:
    cert, key = _self_signed(tmp_path, "images.shop.test")
    server_names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: server_names.append(name)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = png_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield httpd.server_address[1], cert, server_names
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_https_verifies_the_host_name_while_connecting_to_the_pinned_ip(
    tls_server: tuple[int, Path, list[str | None]], fake_dns: FakeDNS
) -> None:
    port, cert, server_names = tls_server
    fake_dns({"images.shop.test": ["127.0.0.1"], "wrong.shop.test": ["127.0.0.1"]})
    settings = ImageSettings(allow_hosts=["127.0.0.1"], fetch_timeout_s=3.0)
    verify = ssl.create_default_context(cafile=str(cert))
    transport = httpx.HTTPTransport(verify=verify, trust_env=False)
    try:
        body = fetch_image(f"https://images.shop.test:{port}/p.png", settings, transport=transport)
        assert body == png_bytes()
        assert server_names[-1] == "images.shop.test"
        with pytest.raises(ImageFetchFailed):  # certificate is not valid for this name
            fetch_image(f"https://wrong.shop.test:{port}/p.png", settings, transport=transport)
    finally:
        transport.close()
