"""Writing result folders whole: build in a temporary sibling, then rename into place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["replace_dir"]


def replace_dir(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` at ``out``, replacing what was there (old one removed
    after the swap)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
