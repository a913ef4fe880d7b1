"""The one adapter to the Kubernetes API for the objects the operator owns (kopf talks to the
API on its own for the SentimentModel itself). Async, on httpx, with kopf's own credential
discovery (in-cluster service account or kubeconfig), so the operator image needs no
Kubernetes client library.

Writes are server-side apply (``application/apply-patch+yaml`` with the field manager
``shopsense-operator``, forced: the operator owns what it renders), and only when the live
object differs from the rendered one on the fields the operator renders, so repeated reconciles
send nothing. A child that exists but is not controlled by the SentimentModel (its
ownerReferences) is never patched or deleted: :class:`NotOwned` says so.
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
    "HTTPRoute": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "SentimentModel": ("/apis/shopsense.io/v1alpha1", "sentimentmodels"),
}
FIELD_MANAGER = "shopsense-operator"


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class NotOwned(Exception):
    """A child object of the rendered name exists but another owner (or none) controls it."""

    def __init__(self, kind: str, namespace: str, name: str, owner: str) -> None:
        super().__init__(f"{kind} {namespace}/{name} exists and is not controlled by this "
                         f"SentimentModel (controller: {owner}); it was left unchanged")
        self.kind, self.name = kind, name


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def owned_by(obj: dict[str, Any], owner_uid: str) -> bool:
    ref = controller_of(obj)
    return bool(ref and ref.get("uid") == owner_uid)


def _owner_text(obj: dict[str, Any]) -> str:
    ref = controller_of(obj)
    return f"{ref.get('kind')}/{ref.get('name')}" if ref else "none"


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

    async def _call(self, method: str, path: str, *, missing_ok: bool = True,
                    **kw: Any) -> dict[str, Any] | None:
        if self._token_path:
            with open(self._token_path, encoding="utf-8") as f:
                self._client.headers["Authorization"] = f"Bearer {f.read().strip()}"
        r = await self._client.request(method, path, **kw)
        if r.status_code == 404 and missing_ok:
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

    def _owner_uid(self, obj: dict[str, Any]) -> str:
        ref = controller_of(obj)
        if ref is None:
            raise ValueError(f"{obj['kind']} {obj['metadata']['name']}: rendered without a "
                             "controller ownerReference")
        return ref["uid"]

    async def apply(self, obj: dict[str, Any]) -> str:
        """Server-side apply ``obj``; returns ``created``, ``patched`` or ``unchanged``.
        Raises :class:`NotOwned` when a live object of that name has another controller."""
        kind, meta = obj["kind"], obj["metadata"]
        live = await self.get(kind, meta["namespace"], meta["name"])
        if live is not None:
            if not owned_by(live, self._owner_uid(obj)):
                raise NotOwned(kind, meta["namespace"], meta["name"], _owner_text(live))
            if not differs(live, obj):
                return "unchanged"
        params = {"fieldManager": FIELD_MANAGER, "force": "true"}
        try:
            await self._call("PATCH", path_for(kind, meta["namespace"], meta["name"]),
                             json=obj, params=params,
                             headers={"Content-Type": "application/apply-patch+yaml"},
                             missing_ok=False)
        except KubeError as exc:
            # A real API server creates on apply; a server without apply-create answers 404.
            if exc.status != 404 or live is not None:
                raise
            await self._call("POST", path_for(kind, meta["namespace"]), json=obj,
                             params={"fieldManager": FIELD_MANAGER})
        return "created" if live is None else "patched"

    async def delete(self, kind: str, namespace: str, name: str, *, owner_uid: str) -> bool:
        """Delete (foreground, so a RayService's cluster goes with it) if it exists and
        ``owner_uid`` controls it; False if absent. Raises :class:`NotOwned` otherwise."""
        live = await self.get(kind, namespace, name)
        if live is None:
            return False
        if not owned_by(live, owner_uid):
            raise NotOwned(kind, namespace, name, _owner_text(live))
        res = await self._call("DELETE", path_for(kind, namespace, name),
                               json={"propagationPolicy": "Foreground"})
        return res is not None

    async def patch_status(self, kind: str, namespace: str, name: str,
                           status: dict[str, Any]) -> None:
        """A merge patch of the status subresource."""
        await self._call("PATCH", path_for(kind, namespace, name) + "/status",
                         json={"status": status},
                         headers={"Content-Type": "application/merge-patch+json"})
