"""Reading JSON Lines files of objects, with errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from shopsense.errors import DataError


def iter_json_objects(
    path: Path, *, missing: str = "no such file"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line; ``DataError`` on a missing file,
    invalid JSON, bytes that are not UTF-8 or a line that is not a JSON object."""
    path = Path(path)
    try:
        fh = path.open(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise DataError(f"{path}: {missing}") from exc
    with fh:
        lineno = 0
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
                if not isinstance(obj, dict):
                    raise DataError(f"{path}:{lineno}: each line must be a JSON object")
                yield lineno, obj
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}:{lineno + 1}: not UTF-8 ({exc.reason})") from exc
