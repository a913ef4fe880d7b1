"""``shopsense dashboards``: provision the Grafana dashboards of ``charts/shopsense/dashboards``
through the Grafana HTTP API (with ``grafana-client``).

    shopsense dashboards list
    shopsense dashboards push --url https://grafana.example.org [--folder shopsense]

Credentials come from the environment (or the options): ``GRAFANA_API_KEY`` (or
``GRAFANA_TOKEN``) for a service-account token, sent as ``Authorization: Bearer``; else
``GRAFANA_BASIC_AUTH=user:password``; else ``user:password@`` inside the URL. ``push`` makes sure
the folder exists (``GET /api/folders/<uid>``, ``POST /api/folders``), then creates or replaces
each dashboard by its ``uid`` (``POST /api/dashboards/db`` with ``overwrite: true``), so running
it again updates the dashboards in place.

The dashboards read Prometheus through a ``datasource`` template variable, so they need no
data-source uid of the target Grafana. Registered on the root command through the
``shopsense.commands`` entry point.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import typer

DASHBOARDS_SUBDIR = Path("charts") / "shopsense" / "dashboards"
DEFAULT_FOLDER = "shopsense"


class DashboardError(Exception):
    """A dashboard file or a Grafana answer that push cannot use."""


def default_dir() -> Path:
    """``charts/shopsense/dashboards`` of the working directory, else of the source tree this
    module lives in (an editable install)."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        d = root / DASHBOARDS_SUBDIR
        if d.is_dir():
            return d
    return Path.cwd() / DASHBOARDS_SUBDIR


def load_dashboards(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``*.json`` dashboard model in ``directory``, checked: a JSON object with a
    ``uid``, a ``title`` and ``panels``; uids unique."""
    files = sorted(Path(directory).glob("*.json"))
    if not files:
        raise DashboardError(f"no dashboard JSON files in {directory}")
    out, seen = [], {}
    for f in files:
        try:
            d = json.loads(f.read_text())
        except json.JSONDecodeError as exc:
            raise DashboardError(f"{f}: not valid JSON: {exc}") from exc
        if not isinstance(d, dict):
            raise DashboardError(f"{f}: a dashboard is a JSON object")
        for key in ("uid", "title", "panels"):
            if not d.get(key):
                raise DashboardError(f"{f}: has no {key!r}")
        if d["uid"] in seen:
            raise DashboardError(f"{f}: uid {d['uid']!r} is also used by {seen[d['uid']]}")
        seen[d["uid"]] = f.name
        out.append((f, d))
    return out


def redact(url: str) -> str:
    """``url`` without a password in it (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def credential_from(api_key: str | None, basic_auth: str | None) -> str | tuple[str, str] | None:
    """A token (Bearer) or a (user, password) pair for ``GrafanaApi.from_url``."""
    if api_key:
        return api_key
    if basic_auth:
        user, sep, password = basic_auth.partition(":")
        if not sep or not user:
            raise DashboardError("basic auth must look like user:password")
        return (user, password)
    return None


@dataclass
class Pushed:
    file: str
    uid: str
    title: str
    status: str
    version: int | None
    url: str | None


def ensure_folder(grafana, uid: str, title: str) -> dict[str, Any]:
    """The folder with ``uid``, created with ``title`` when missing."""
    from grafana_client.client import GrafanaClientError

    try:
        return grafana.folder.get_folder(uid)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
    return grafana.folder.create_folder(title, uid=uid)


def push_dashboards(grafana, dashboards: list[tuple[Path, dict[str, Any]]], *,
                    folder_uid: str | None, folder_title: str | None = None,
                    message: str = "provisioned by `shopsense dashboards push`") -> list[Pushed]:
    """Create or replace each dashboard (by uid) in the folder ``folder_uid`` (created if
    missing; ``None`` = Grafana's General folder)."""
    if folder_uid:
        ensure_folder(grafana, folder_uid, folder_title or folder_uid)
    results = []
    for path, model in dashboards:
        body = copy.deepcopy(model)
        body["id"] = None  # Grafana matches on uid; a numeric id from another instance breaks it
        payload: dict[str, Any] = {"dashboard": body, "overwrite": True, "message": message}
        if folder_uid:
            payload["folderUid"] = folder_uid
        answer = grafana.dashboard.update_dashboard(payload)
        if not isinstance(answer, dict) or answer.get("status") != "success":
            raise DashboardError(f"{path.name}: Grafana answered {answer!r}")
        results.append(Pushed(path.name, answer.get("uid", body["uid"]), body["title"],
                              answer["status"], answer.get("version"), answer.get("url")))
    return results


dashboards_app = typer.Typer(help="Grafana dashboards of the platform: list them, push them.",
                             no_args_is_help=True)


@dashboards_app.command("list")
def list_cmd(
    directory: Path | None = typer.Option(None, "--dir", help="dashboard JSON folder "
                                             "(default charts/shopsense/dashboards)"),
) -> None:
    """The dashboards that `push` would provision, with their panels."""
    try:
        boards = load_dashboards(directory or default_dir())
    except DashboardError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for path, d in boards:
        panels = [p for p in d["panels"] if p.get("type") != "row"]
        typer.echo(f"{d['uid']}  {d['title']}  ({path.name}, {len(panels)} panels)")
        for p in panels:
            typer.echo(f"    {p.get('type', '?'):11} {p.get('title', '')}")


@dashboards_app.command("push")
def push_cmd(
    url: str = typer.Option(..., "--url", envvar="GRAFANA_URL",
                            help="Grafana base URL, e.g. http://grafana:3000 (may carry "
                            "user:password@ and a sub-path)"),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar=["GRAFANA_API_KEY", "GRAFANA_TOKEN"], show_envvar=True,
        help="service-account token (Bearer); prefer the environment variable"),
    basic_auth: str | None = typer.Option(
        None, "--basic-auth", envvar="GRAFANA_BASIC_AUTH", show_envvar=True,
        help="user:password; prefer the environment variable"),
    folder: str = typer.Option(DEFAULT_FOLDER, help="folder title (created if missing); "
                               "'' = the General folder"),
    folder_uid: str | None = typer.Option(None, help="folder uid (default: the title, as "
                                          "letters, digits, - and _)"),
    directory: Path | None = typer.Option(None, "--dir", help="dashboard JSON folder "
                                             "(default charts/shopsense/dashboards)"),
    timeout: float = typer.Option(15.0, help="seconds per HTTP call"),
    dry_run: bool = typer.Option(False, "--dry-run", help="check the files and print what "
                                 "would be pushed; send nothing"),
    as_json: bool = typer.Option(False, "--json", help="print the results as JSON"),
) -> None:
    """Create or update the dashboards in Grafana (idempotent: by uid, overwrite)."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException

    def fail(message: str, code: int = 1) -> None:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code)

    try:
        boards = load_dashboards(directory or default_dir())
        credential = credential_from(api_key, basic_auth)
    except DashboardError as exc:
        fail(str(exc), 2)
    # A folder uid is at most 40 of [A-Za-z0-9_-]; the default is the title made into one.
    uid = (folder_uid or re.sub(r"[^A-Za-z0-9_-]+", "-", folder or "").strip("-")[:40]) or None
    if dry_run:
        where = f"folder {uid!r}" if uid else "the General folder"
        for path, d in boards:
            typer.echo(f"would push {d['uid']} ({d['title']}) from {path.name} to {where}")
        return
    shown = redact(url)
    grafana = GrafanaApi.from_url(url, credential=credential, timeout=timeout)
    try:
        results = push_dashboards(grafana, boards, folder_uid=uid, folder_title=folder or uid)
    except GrafanaException as exc:
        detail = exc.response if exc.response else exc
        hint = " (check GRAFANA_API_KEY or GRAFANA_BASIC_AUTH)" if exc.status_code in (401, 403) else ""
        fail(f"Grafana at {shown} refused: {detail}{hint}")
    except DashboardError as exc:
        fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - connection errors of niquests, DNS, TLS
        fail(f"could not reach Grafana at {shown}: {type(exc).__name__}: {exc}")
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in results], indent=2))
        return
    for r in results:
        typer.echo(f"{r.status}: {r.uid} ({r.title}) version {r.version} -> {r.url or '-'}")


def register(app: typer.Typer) -> None:
    app.add_typer(dashboards_app, name="dashboards")

