"""The one adapter to the Kubernetes API for the objects the operator owns (kopf talks to the
API on its own for the SentimentModel itself). Async, on httpx, with kopf's own credential
discovery (in-cluster service account or kubeconfig), so the operator image needs no
Kubernetes client library.

Writes are create-or-merge-patch, and only when the live object differs from the rendered one
on the fields the operator renders, so repeated reconciles send nothing.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"

#: kind -> (API prefix, plural) for the kinds the operator writes or reads.
KINDS: dict[str, tuple[str, str]] = {
    "RayService": ("/apis/ray.io/v1", "rayservices"),
    "Service": ("/api/v1", "services"),
    "Ingress": ("/apis/networking.k8s.io/v1", "ingresses"),
    "SentimentModel": ("/apis/shopsense.io/v1alpha1", "sentimentmodels"),
}


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def path_for(kind: str, namespace: str, name: str | None = None) -> str:
    prefix, plural = KINDS[kind]
    p = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{p}/{name}" if name else p


def differs(live: Any, want: Any) -> bool:
    """True if applying ``want`` as a merge patch would change ``live``: every key ``want`` sets
    must be equal in ``live`` (extra keys in ``live``, e.g. defaults and status, are fine)."""
    if isinstance(want, dict):
        if not isinstance(live, dict):
            return True
        return any(differs(live.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        if not isinstance(live, list) or len(live) != len(want):
            return True
        return any(differs(a, b) for a, b in zip(live, want))
    return live != want


class KubeClient:
    def __init__(self, base_url: str, *, token: str | None = None, token_path: str | None = None,
                 verify: ssl.SSLContext | bool = True,
                 cert: tuple[str, str] | None = None, timeout_s: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Projected service-account tokens rotate: re-read the file before each request.
        self._token_path = token_path
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers,
                                         verify=verify, cert=cert, timeout=timeout_s)

    @classmethod
    def from_kopf(cls) -> "KubeClient":
        """Credentials the way ``kopf run`` finds them: the pod's service account, else the
        current kubeconfig context (token or client certificate)."""
        import kopf

        settings = kopf.OperatorSettings()
        info = (kopf.login_with_service_account(settings=settings)
                or kopf.login_with_kubeconfig(settings=settings))
        if info is None:
            raise RuntimeError("no Kubernetes credentials: no service account, no kubeconfig")
        verify: ssl.SSLContext | bool = not info.insecure
        if info.ca_path or info.ca_data:
            ctx = ssl.create_default_context(cafile=str(info.ca_path) if info.ca_path else None)
            if info.ca_data:
                data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
                ctx.load_verify_locations(cadata=data)
            verify = ctx
        cert = None
        if info.certificate_path and info.private_key_path:
            cert = (str(info.certificate_path), str(info.private_key_path))
        token_path = SA_TOKEN if info.server == "https://kubernetes.default.svc" else None
        return cls(info.server, token=info.token, token_path=token_path, verify=verify,
                   cert=cert)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any] | None:
        if self._token_path:
            with open(self._token_path, encoding="utf-8") as f:
                self._client.headers["Authorization"] = f"Bearer {f.read().strip()}"
        r = await self._client.request(method, path, **kw)
        if r.status_code == 404:
            return None
        if r.status_code >= 400:
            try:
                msg = r.json().get("message", r.text)
            except ValueError:
                msg = r.text
            raise KubeError(r.status_code, f"{method} {path}: {msg}")
        return r.json() if r.content else {}

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call("GET", path_for(kind, namespace, name))

    async def apply(self, obj: dict[str, Any]) -> str:
        """Create ``obj`` or merge-patch it onto the live one; returns what was done:
        ``created``, ``patched`` or ``unchanged``."""
        kind, meta = obj["kind"], obj["metadata"]
        live = await self.get(kind, meta["namespace"], meta["name"])
        if live is None:
            try:
                await self._call("POST", path_for(kind, meta["namespace"]), json=obj)
                return "created"
            except KubeError as exc:
                if exc.status != 409:  # 409: created meanwhile by another writer: patch it
                    raise
        if not differs(live, obj):
            return "unchanged"
        await self._call("PATCH", path_for(kind, meta["namespace"], meta["name"]), json=obj,
                         headers={"Content-Type": "application/merge-patch+json"})
        return "patched"

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete (foreground, so a RayService's cluster goes with it); False if absent."""
        res = await self._call("DELETE", path_for(kind, namespace, name),
                               json={"propagationPolicy": "Foreground"})
        return res is not None
