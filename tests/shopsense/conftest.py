from __future__ import annotations

import pytest

from tests.shopsense._s3 import moto_s3_server, new_local_store, new_s3_store


@pytest.fixture(scope="session")
def s3_settings():
    # moto's ThreadedMotoServer is a real S3-compatible HTTP server on 127.0.0.1: the faithful
    # substitute for MinIO (see tests/shopsense/_s3.py)
    with moto_s3_server() as settings:
        yield settings


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """Each test that takes ``store`` runs against LocalStore and against S3Store (moto)."""
    if request.param == "local":
        return new_local_store(tmp_path)
    return new_s3_store(request.getfixturevalue("s3_settings"))
