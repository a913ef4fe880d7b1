"""What the operator refuses to do for a SentimentModel that passed the CRD's schema: the
operator's policy (which registries, images and Secrets a spec may name) and the settings a
spec needs from the cluster (a Gateway, KubeRay's incremental upgrade). Each problem becomes a
status condition (and an Event), never only a log line; nothing is rendered for such a spec.
"""

from __future__ import annotations

from operators.sentimentmodel import render
from operators.sentimentmodel.settings import OperatorSettings
from operators.sentimentmodel.spec import SentimentModelSpec


def problems(spec: SentimentModelSpec, settings: OperatorSettings) -> list[tuple[str, str]]:
    """(reason, message) for each thing the operator will not do; empty when all is well."""
    out: list[tuple[str, str]] = []
    try:
        spec.model.parts  # noqa: B018 - validates the URI
    except ValueError as exc:
        out.append(("InvalidModelURI", str(exc)))
    entries = settings.registry_entries()
    if not entries:
        out.append(("NoRegistry", "the operator has no registry configured (chart value "
                    "registries)"))
    elif render.registry_for(spec, settings) is None:
        out.append(("RegistryNotAllowed",
                    "spec.model.registryUrl is not one of the operator's registries ("
                    + ", ".join(e.name for e in entries) + "); nothing was sent to it"))
    if spec.image and not settings.image_allowed(spec.image):
        out.append(("ImageNotAllowed", f"spec.image {spec.image!r} is not allowed by the "
                    "operator's policy (chart value policy.allowedImages)"))
    wanted = list(spec.env_from_secrets)
    if spec.auth.api_keys_secret_name:
        wanted.append(spec.auth.api_keys_secret_name)
    for name in wanted:
        if not settings.secret_allowed(name):
            out.append(("SecretNotAllowed", f"Secret {name!r} is not allowed by the operator's "
                        "policy (chart value policy.allowedSecrets)"))
    ing, ro = spec.ingress, spec.rollout
    if ing.enabled and ing.api == "Gateway" and not (ing.gateway_name or settings.gateway_name):
        out.append(("NoGateway", "spec.ingress.api is Gateway but no Gateway is named "
                    "(spec.ingress.gatewayName or the chart value gateway.name)"))
    if (ing.enabled and ing.api == "Ingress" and ro.strategy == "Canary"
            and ing.class_name != "nginx"):
        out.append(("CanaryNeedsWeights", "canary weights on a plain Ingress need ingress-"
                    "nginx (className nginx); use ingress.api Gateway or rollout.strategy "
                    "KubeRay"))
    if ro.strategy == "KubeRayIncremental":
        if not settings.kuberay_incremental_upgrade:
            out.append(("IncrementalUpgradeUnavailable", "the installed KubeRay has no "
                        "incremental upgrade (KubeRay >= 1.5.1 with the feature gate "
                        "RayServiceIncrementalUpgrade; chart value kuberay.incrementalUpgrade)"))
        if not (ro.incremental.gateway_class_name or settings.gateway_class_name):
            out.append(("NoGatewayClass", "strategy KubeRayIncremental needs a GatewayClass "
                        "(spec.rollout.incremental.gatewayClassName or the chart value "
                        "gateway.className)"))
    return out
