"""``shopsense operator ...``: run the operator, print its CRD, render a SentimentModel offline.
Registered on the root command through the ``shopsense.commands`` entry point."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Optional

import typer
import yaml

operator_app = typer.Typer(help="The SentimentModel operator (kopf) and its CRD.",
                           no_args_is_help=True)


@operator_app.command("run")
def run_cmd(
    standalone: bool = typer.Option(False, help="no peering (development only)"),
    namespace: list[str] = typer.Option([], "--namespace", "-n",
                                        help="watch these namespaces (default: all)"),
    liveness: str = typer.Option("http://0.0.0.0:8081/healthz", help="kopf liveness endpoint"),
    log_format: str = typer.Option("json", help="json | plain | full"),
    verbose: bool = typer.Option(False, "--verbose"),
) -> None:
    """Run the operator against the current cluster (in-cluster or kubeconfig credentials)."""
    import kopf

    from operators.sentimentmodel.handlers import register
    from operators.sentimentmodel.settings import OperatorSettings

    cfg = OperatorSettings()
    if standalone:
        cfg = cfg.model_copy(update={"standalone": True})
    if namespace:
        cfg = cfg.model_copy(update={"namespaces": list(namespace)})
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat[log_format.upper()])
    registry = kopf.OperatorRegistry()
    register(registry, cfg)
    asyncio.run(kopf.operator(
        registry=registry, standalone=cfg.standalone, peering_name=cfg.peering,
        namespaces=cfg.namespaces, clusterwide=not cfg.namespaces,
        liveness_endpoint=liveness or None))


@operator_app.command("crd")
def crd_cmd() -> None:
    """Print the SentimentModel CustomResourceDefinition."""
    from operators.sentimentmodel.spec import CRD_PATH

    sys.stdout.write(CRD_PATH.read_text())


@operator_app.command("render")
def render_cmd(
    file: Path = typer.Argument(..., exists=True, help="a SentimentModel YAML"),
    version: str = typer.Option(..., help="the model version to render"),
    canary: Optional[str] = typer.Option(None, help="also render a canary of this version"),
    weight: int = typer.Option(10, help="canary traffic weight"),
) -> None:
    """Print the objects the operator would create (no cluster): RayServices, Services, the
    route (HTTPRoute or Ingress) and the NetworkPolicy."""
    from operators.sentimentmodel import policy, render
    from operators.sentimentmodel.settings import OperatorSettings
    from operators.sentimentmodel.spec import parse_spec

    body = yaml.safe_load(file.read_text())
    body.setdefault("metadata", {}).setdefault("namespace", "default")
    body["metadata"].setdefault("uid", "00000000-0000-0000-0000-000000000000")
    spec = parse_spec(body.get("spec"))
    cfg = OperatorSettings()
    problems = policy.problems(spec, cfg)
    if problems:
        for reason, message in problems:
            typer.echo(f"error: {reason}: {message}", err=True)
        raise typer.Exit(1)
    objs = render.render_all(body, spec, cfg, stable=version,
                             canary=(canary, weight) if canary else None)
    sys.stdout.write(yaml.safe_dump_all(objs, sort_keys=False))


def register(app: typer.Typer) -> None:
    app.add_typer(operator_app, name="operator")
