"""Errors keep their cause: the error a user reads wraps the one an operator needs (``raise …
from exc``), and the CLI still prints the user's error as one line, without a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shopsense.data.dataset import read_jsonl, read_manifest
from shopsense.data.jsonl import iter_json_objects
from shopsense.data.loaders import load_set
from shopsense.errors import DataError
from shopsense.store import ObjectNotFound, open_store, read_uri


def test_a_missing_object_keeps_the_os_error(store):
    with pytest.raises(ObjectNotFound) as err:
        store.get_bytes("nope/missing.json")
    cause = err.value.__cause__
    if store.uri.startswith("s3://"):
        from minio.error import S3Error

        assert isinstance(cause, S3Error) and cause.code in ("NoSuchKey", "NoSuchObject")
    else:
        assert isinstance(cause, FileNotFoundError)


def test_a_missing_bucket_keeps_the_s3_error(s3_settings):
    from minio.error import S3Error

    store = open_store("s3://no-such-bucket-xyz/p", s3_settings)
    for call in (lambda: store.get_bytes("k"), lambda: store.exists("k"),
                 lambda: store.list(""), lambda: store.delete("k")):
        with pytest.raises(DataError, match="does not exist") as err:
            call()
        assert isinstance(err.value.__cause__, S3Error)
        assert err.value.__cause__.code == "NoSuchBucket"


def test_read_uri_keeps_the_os_error(tmp_path):
    with pytest.raises(ObjectNotFound) as err:
        read_uri((tmp_path / "none.json").as_uri())
    assert isinstance(err.value.__cause__, FileNotFoundError)


def test_bad_json_lines_keep_the_parser_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{bad\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON") as err:
        list(iter_json_objects(bad))
    assert isinstance(err.value.__cause__, json.JSONDecodeError)

    bad.write_bytes(b'{"text": "\xff"}\n')
    with pytest.raises(DataError, match="not UTF-8") as err:
        list(iter_json_objects(bad))
    assert isinstance(err.value.__cause__, UnicodeDecodeError)

    with pytest.raises(DataError, match="no such file") as err:
        list(iter_json_objects(tmp_path / "none.jsonl"))
    assert isinstance(err.value.__cause__, FileNotFoundError)


def test_dataset_errors_keep_their_cause(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(DataError, match="no such file") as err:
        list(read_jsonl(tmp_path / "none.jsonl"))
    assert isinstance(err.value.__cause__, FileNotFoundError)

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "fine", "label": "happy"}) + "\n")
    with pytest.raises(DataError) as err:
        list(read_jsonl(rows))
    assert isinstance(err.value.__cause__, (ValidationError, ValueError))

    with pytest.raises(DataError, match="no dataset at") as err:
        read_manifest(open_store(tmp_path.as_uri()), "absent")
    assert isinstance(err.value.__cause__, ObjectNotFound)


def test_an_unknown_set_keeps_the_key_error(tmp_path):
    with pytest.raises(DataError, match="unknown set 'nope'") as err:
        load_set("nope", tmp_path)
    assert isinstance(err.value.__cause__, KeyError)


@pytest.mark.parametrize("content,message", [
    ('{"text": "ok", "label": "positive"}\n{bad\n', "eval.jsonl:2: not valid JSON ("),
    (None, "eval.jsonl: no such file"),
])
def test_the_cli_still_prints_one_line(tmp_path, content, message):
    data = tmp_path / "eval.jsonl"
    if content is not None:
        data.write_text(content)
    p = subprocess.run(
        [sys.executable, "-c", "from shopsense.cli import main; main()",
         "evaluate", "--data", str(data), "--baseline", "keyword"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "SHOPSENSE_HOME": str(tmp_path)})
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], p.stderr
