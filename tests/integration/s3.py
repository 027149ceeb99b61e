"""Pytest fixtures for the real object server (versitygw), one per test session.

tests/integration/conftest.py imports them. They need no Kubernetes cluster, only the binary built by ``hack/build-tools.sh s3``; without
it they fail with that hint rather than skip, so a CI run cannot go green by accident.

- ``s3_server``: the running :class:`~stratus.dev.s3server.S3Server` (session).
- ``s3_endpoint``: its URL, region and root key pair (session).
- ``object_store``: an :class:`~stratus.drivers.s3.S3ObjectStore` with the admin API (session).
- ``s3_client``: ``s3_client(access_key, secret_key)`` makes a boto3 client for that pair.
- ``bucket_name``: a fresh bucket name per test; the bucket, if created, is force-deleted
  afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from stratus.drivers.s3 import AdminCredentials, S3ObjectStore
from stratus.dev.s3server import S3Endpoint, S3Server, S3ServerError, find_binary

__all__ = ["s3_server", "s3_endpoint", "object_store", "s3_client", "bucket_name"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    try:
        find_binary()
    except S3ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    server = S3Server(tmp_path_factory.mktemp("s3"), die_with_parent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_endpoint(s3_server: S3Server) -> S3Endpoint:
    assert s3_server.endpoint is not None
    return s3_server.endpoint


@pytest.fixture(scope="session")
def object_store(s3_endpoint: S3Endpoint) -> S3ObjectStore:
    return S3ObjectStore.for_versitygw(
        AdminCredentials(s3_endpoint.url, s3_endpoint.region, s3_endpoint.access_key, s3_endpoint.secret_key)
    )


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: S3Endpoint) -> Callable[[str, str], Any]:
    def make(access_key: str, secret_key: str) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=s3_endpoint.url,
            region_name=s3_endpoint.region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    return make


@pytest.fixture
def bucket_name(object_store: S3ObjectStore) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:20]}"
    yield name
    object_store.delete_bucket(name, force=True)
