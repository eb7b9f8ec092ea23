"""Shared fixtures: a loopback S3 server (moto) and stores that run a test on disk and on S3.

Heavy imports stay inside fixtures so collecting the suite stays fast.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tthf.engine.testing import free_port, start_moto


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server on 127.0.0.1, shared by the session."""
    server = start_moto(free_port())
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Fake credentials and TTHF_S3_ENDPOINT_URL for one test; real AWS config is never read."""
    nowhere = tmp_path_factory.getbasetemp() / "no-aws-config"
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(nowhere))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("TTHF_S3_ENDPOINT_URL", s3_server)
    return s3_server


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    """A fresh, empty bucket; returns ``s3://bucket/prefix``."""
    import boto3

    bucket = f"tthf-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/prefix"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def tmp_store_uri(request: pytest.FixtureRequest, tmp_path) -> str:
    """An empty store root, once as a local folder and once as an S3 prefix."""
    if request.param == "s3":
        return request.getfixturevalue("s3_bucket")
    return str(tmp_path / "store")


@pytest.fixture
def tmp_store(tmp_store_uri: str):  # -> tthf.engine.store.Store
    from tthf.engine.store import open_store

    return open_store(tmp_store_uri)


#: what the test cluster's workers see of the fake AWS account (``s3_env``'s, which they cannot inherit)
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "127.0.0.1,localhost",
}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One 2-CPU local Ray cluster for the session, in this process; returns its address. Every test that
    runs ``--executor ray`` uses it (tthf keeps a process's existing connection): a second cluster started
    in the same process after another was shut down lost its workers at start. Nothing is left in
    ~/.ray or /tmp/ray."""
    import logging
    import os
    import shutil
    import tempfile

    ray = pytest.importorskip("ray", reason="pip install 'tthf[ray]' to test --executor ray")
    auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # Ray would write a token to ~/.ray for a local cluster
    temp = tempfile.mkdtemp(prefix="tthf-ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    context = ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 2**20,
        _temp_dir=temp,
        logging_level=logging.WARNING,
        runtime_env={"env_vars": FAKE_AWS},
    )
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        if auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth
