"""The import layers of pyproject.toml's [tool.importlinter], checked by import-linter itself.

The contract runs against this tree (it must be kept) and against copies of it with one
forbidden import written in (each must be broken, and the report must name that import), so a
contract that checks nothing, or a config the linter no longer reads, fails here too."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP = ("benchmarks", "services", "pipelines", "operators", "shopsense")

# lint-imports through its Python API, in a fresh interpreter whose only project on the path is
# `root` (the layers are read from the files under it, not from what pytest imported)
_RUN = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _RUN], cwd=root, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(root), "PATH": ""})


def _copy_tree(dest: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    for top in TOP:
        for src in (ROOT / top).rglob("*.py"):
            target = dest / src.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, target)


def test_the_tree_keeps_the_layers():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


# (file that gets the import, module it imports, contract that must break)
BREAKS = [
    ("shopsense/text.py", "services.retrieval.schema", "benchmarks above"),
    ("shopsense/registry.py", "benchmarks._harness", "benchmarks above"),
    ("services/retrieval/schema.py", "pipelines.steps", "benchmarks above"),
    ("operators/sentimentmodel/spec.py", "services.inference", "benchmarks above"),
    ("pipelines/scrape/extract.py", "pipelines.validate.run", "pipeline steps are independent"),
    ("pipelines/train/config.py", "pipelines.label", "pipeline steps are independent"),
]


@pytest.mark.parametrize("where,imported,contract", BREAKS)
def test_a_forbidden_import_breaks_the_contract(tmp_path, where, imported, contract):
    _copy_tree(tmp_path)
    module = where.removesuffix(".py").replace("/", ".")
    path = tmp_path / where
    path.write_text(path.read_text() + f"\n\ndef _forbidden():\n    import {imported}\n")

    done = _lint(tmp_path)
    assert done.returncode != 0, done.stdout
    broken = [line for line in done.stdout.splitlines() if line.endswith("BROKEN")]
    assert len(broken) == 1 and contract in broken[0], done.stdout
    assert f"{module} -> {imported}" in done.stdout, done.stdout
