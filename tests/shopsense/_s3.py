"""A real S3-compatible HTTP server on 127.0.0.1 for store tests.

moto's ThreadedMotoServer speaks the S3 REST API over HTTP, so the minio client (the one used
in the cluster against MinIO) exercises the same code paths: signing, PUT/GET/HEAD, list v2,
multi-delete, server-side copy, multipart upload. It is the faithful in-process substitute for
a MinIO container; nothing is mocked inside the client.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shopsense.settings import Settings
from shopsense.store import ObjectStore, open_store

ACCESS_KEY = "testing"
SECRET_KEY = "testing-secret"


@contextmanager
def moto_s3_server() -> Iterator[Settings]:
    """Start moto on a free port (port 0) and yield Settings pointing the minio client at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield Settings(
            s3_endpoint=f"{host}:{port}",
            s3_access_key=ACCESS_KEY,
            s3_secret_key=SECRET_KEY,
            s3_secure=False,
        )
    finally:
        server.stop()


def new_s3_store(settings: Settings, prefix: str = "root") -> ObjectStore:
    """A fresh bucket (created with the minio client) and a store under ``prefix`` in it."""
    from minio import Minio

    bucket = f"test-{uuid.uuid4().hex[:12]}"
    client = Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=False,
    )
    client.make_bucket(bucket)
    return open_store(f"s3://{bucket}/{prefix}", settings)


def new_local_store(tmp_path: Path) -> ObjectStore:
    return open_store((tmp_path / "store").as_uri())
