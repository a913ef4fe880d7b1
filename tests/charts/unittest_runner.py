"""Runs the chart's helm-unittest suites (``charts/shopsense/tests/*_test.yaml``) with
``helm template``. The helm-unittest plugin is not published on npm or PyPI, the only registries
this machine reaches, so this runner reads the same suite format and implements the assertions
the suites use (a subset of helm-unittest's: ``equal``, ``notEqual``, ``exists``, ``notExists``,
``contains``, ``notContains``, ``isKind``, ``hasDocuments``, ``matchRegex``, ``lengthEqual``,
``failedTemplate``). The suites run unchanged under ``helm unittest charts/shopsense`` where the
plugin is installed.

Paths are helm-unittest's: dotted keys, ``[N]`` indexes and ``[?(@.key == "value")]`` filters.
Without ``documentIndex`` an assertion must hold for every document the template renders.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_MISSING = object()
_TOKEN = re.compile(r"""\[\?\(@\.(?P<fkey>[\w.-]+)\s*==\s*(?P<fval>"[^"]*"|'[^']*'|[^)\]]+)\)\]"""
                    r"""|\[(?P<index>\d+)\]|\[(?P<quoted>"[^"]+"|'[^']+')\]|(?P<key>[^.\[\]]+)""")


def path_get(doc: Any, path: str) -> Any:
    """The value at a helm-unittest path, or ``_MISSING``."""
    cur = doc
    for m in _TOKEN.finditer(path):
        if cur is _MISSING:
            return _MISSING
        if m["fkey"]:
            want = m["fval"].strip().strip("'\"")
            if not isinstance(cur, list):
                return _MISSING
            found = [x for x in cur if isinstance(x, dict) and str(x.get(m["fkey"])) == want]
            cur = found[0] if found else _MISSING
        elif m["index"] is not None:
            i = int(m["index"])
            cur = cur[i] if isinstance(cur, list) and i < len(cur) else _MISSING
        else:
            key = (m["quoted"] or "").strip("'\"") or m["key"]
            cur = cur.get(key, _MISSING) if isinstance(cur, dict) else _MISSING
    return cur


def _nest(sets: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in sets.items():
        parts = dotted.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


@dataclass
class Rendered:
    docs: list[dict[str, Any]]
    error: str | None


def render(helm: str, chart: Path, template: str, *, release: str, namespace: str,
           sets: dict[str, Any]) -> Rendered:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(_nest(sets), f)
        values = f.name
    try:
        r = subprocess.run([helm, "template", release, str(chart), "-n", namespace,
                            "-f", values, "--show-only", template],
                           capture_output=True, text=True, timeout=120)
    finally:
        Path(values).unlink()
    if r.returncode != 0:
        if "could not find template" in r.stderr:
            return Rendered([], None)
        return Rendered([], r.stderr)
    return Rendered([d for d in yaml.safe_load_all(r.stdout) if d], None)


def check(assertion: dict[str, Any], rendered: Rendered) -> list[str]:
    """Problems of one assertion (empty: it holds)."""
    assertion = dict(assertion)
    index = assertion.pop("documentIndex", None)
    (kind, arg), = assertion.items()
    arg = arg or {}
    if kind == "failedTemplate":
        if rendered.error is None:
            return ["expected the template to fail, it rendered"]
        msg = arg.get("errorMessage")
        pattern = arg.get("errorPattern")
        if msg and msg not in rendered.error:
            return [f"error {rendered.error.strip()!r} does not contain {msg!r}"]
        if pattern and not re.search(pattern, rendered.error):
            return [f"error {rendered.error.strip()!r} does not match {pattern!r}"]
        return []
    if rendered.error is not None:
        return [f"rendering failed: {rendered.error.strip()}"]
    if kind == "hasDocuments":
        n = len(rendered.docs)
        return [] if n == arg["count"] else [f"{n} documents, expected {arg['count']}"]
    docs = rendered.docs if index is None else rendered.docs[index:index + 1]
    if not docs:
        return [f"{kind}: the template rendered no document"]
    out = []
    for i, doc in enumerate(docs):
        value = path_get(doc, arg["path"]) if "path" in arg else doc
        where = f"document {i}, {arg.get('path', '')}"
        if kind == "isKind" and doc.get("kind") != arg["of"]:
            out.append(f"{where}: kind {doc.get('kind')}, expected {arg['of']}")
        elif kind == "equal" and value != arg["value"]:
            out.append(f"{where}: {value!r} != {arg['value']!r}")
        elif kind == "notEqual" and value == arg["value"]:
            out.append(f"{where}: is {value!r}")
        elif kind == "exists" and value is _MISSING:
            out.append(f"{where}: missing")
        elif kind == "notExists" and value is not _MISSING:
            out.append(f"{where}: exists ({value!r})")
        elif kind in ("contains", "notContains"):
            inside = isinstance(value, list) and arg["content"] in value
            if kind == "contains" and not inside:
                out.append(f"{where}: {arg['content']!r} not in {value!r}")
            if kind == "notContains" and inside:
                out.append(f"{where}: {arg['content']!r} is in it")
        elif kind == "matchRegex" and not (isinstance(value, str)
                                           and re.search(arg["pattern"], value)):
            out.append(f"{where}: {value!r} does not match {arg['pattern']!r}")
        elif kind == "lengthEqual" and (not isinstance(value, (list, dict))
                                        or len(value) != arg["count"]):
            out.append(f"{where}: length of {value!r} is not {arg['count']}")
        elif kind not in ("isKind", "equal", "notEqual", "exists", "notExists", "contains",
                          "notContains", "matchRegex", "lengthEqual"):
            out.append(f"unknown assertion {kind}")
    return out


def load_suites(chart: Path) -> list[tuple[Path, dict[str, Any]]]:
    return [(f, yaml.safe_load(f.read_text())) for f in sorted((chart / "tests").glob("*_test.yaml"))]


def run_test(helm: str, chart: Path, suite: dict[str, Any], test: dict[str, Any]) -> list[str]:
    release = (suite.get("release") or {}).get("name", "t")
    namespace = (suite.get("release") or {}).get("namespace", "shop")
    sets = {**(suite.get("set") or {}), **(test.get("set") or {})}
    templates = [test["template"]] if test.get("template") else suite["templates"]
    problems = []
    for template in templates:
        rendered = render(helm, chart, template, release=release, namespace=namespace, sets=sets)
        if "documentIndex" in test and not rendered.error and rendered.docs:
            rendered = Rendered([rendered.docs[test["documentIndex"]]], None)
        for a in test["asserts"]:
            problems += [f"{template}: {p}" for p in check(a, rendered)]
    return problems
