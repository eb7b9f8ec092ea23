from __future__ import annotations

import os
import pickle
import resource
import signal
import threading
import time
from pathlib import Path

import boto3
import pytest

from tthf.engine.store import KeyNotFoundError, LocalStore, S3Store, Store, StoreLocator, open_store
from tthf.engine.testing import free_port, start_moto
from tthf.errors import StoreError, UsageError


def test_round_trip_and_listing(tmp_store: Store) -> None:
    tmp_store.write_bytes("a/b/c.bin", b"\x00\x01")
    tmp_store.write_text("a/d.txt", "héllo")
    tmp_store.write_bytes("e.txt", b"")
    assert tmp_store.read_bytes("a/b/c.bin") == b"\x00\x01"
    assert tmp_store.read_text("a/d.txt") == "héllo"
    assert tmp_store.read_bytes("e.txt") == b""
    assert tmp_store.list() == ["a/b/c.bin", "a/d.txt", "e.txt"]
    assert tmp_store.list("a") == ["a/b/c.bin", "a/d.txt"]
    assert tmp_store.list("a/") == ["a/b/c.bin", "a/d.txt"]
    assert tmp_store.list("nothing") == []
    assert tmp_store.list_dirs() == ["a"]
    assert tmp_store.list_dirs("a") == ["b"]
    assert tmp_store.list_dirs("a/b") == []


def test_prefix_is_a_folder_not_a_string_prefix(tmp_store: Store) -> None:
    tmp_store.write_bytes("run/x", b"1")
    tmp_store.write_bytes("runner/y", b"2")
    assert tmp_store.list("run") == ["run/x"]


def test_child_store_is_rooted_at_the_prefix(tmp_store: Store) -> None:
    child = tmp_store.child("exp/model")
    child.write_bytes("r1/config.json", b"{}")
    assert tmp_store.read_bytes("exp/model/r1/config.json") == b"{}"
    assert child.list() == ["r1/config.json"]
    assert child.list_dirs() == ["r1"]
    assert child.uri("r1/config.json") == tmp_store.uri("exp/model/r1/config.json")
    assert child.child("r1").read_bytes("config.json") == b"{}"


def test_overwrite_exists_delete(tmp_store: Store) -> None:
    tmp_store.write_bytes("k", b"old")
    tmp_store.write_bytes("k", b"new")
    assert tmp_store.read_bytes("k") == b"new"
    assert tmp_store.exists("k")
    assert not tmp_store.exists("missing")
    tmp_store.write_bytes("dir/f", b"x")
    assert not tmp_store.exists("dir")  # folders are not keys
    tmp_store.delete("k")
    tmp_store.delete("k")  # idempotent
    assert not tmp_store.exists("k")
    assert tmp_store.list() == ["dir/f"]


def test_missing_key_is_a_distinct_error_naming_the_uri(tmp_store: Store) -> None:
    with pytest.raises(KeyNotFoundError) as info:
        tmp_store.read_bytes("no/such.parquet")
    assert isinstance(info.value, StoreError)
    assert tmp_store.uri("no/such.parquet") in str(info.value)


@pytest.mark.parametrize("key", ["../escape", "/abs", "a/../../b", ""])
def test_keys_cannot_escape_the_root(tmp_store: Store, key: str) -> None:
    with pytest.raises(UsageError):
        tmp_store.write_bytes(key, b"x")


def test_open_store_dispatch(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path), LocalStore)
    assert isinstance(open_store("s3://bucket/some/prefix", endpoint_url="http://127.0.0.1:1"), S3Store)
    assert (
        open_store("s3://bucket/some/prefix/", endpoint_url="http://127.0.0.1:1").uri("k")
        == "s3://bucket/some/prefix/k"
    )
    assert open_store("s3://bucket", endpoint_url="http://127.0.0.1:1").uri("k") == "s3://bucket/k"
    with pytest.raises(UsageError, match="s3://bucket/prefix"):
        open_store("gs://bucket/x")


def test_a_locator_crosses_to_another_process_and_opens_the_same_store(tmp_store: Store) -> None:
    child = tmp_store.child("runs/a")
    child.write_bytes("k", b"v")
    locator = pickle.loads(pickle.dumps(child.locator()))
    reopened = locator.open()
    assert type(reopened) is type(child) and reopened.uri() == child.uri() and reopened.read_bytes("k") == b"v"
    assert reopened.locator() == locator


def test_an_s3_locator_keeps_the_endpoint_the_store_was_opened_with(monkeypatch: pytest.MonkeyPatch) -> None:
    given = open_store("s3://bucket/p", endpoint_url="http://127.0.0.1:1").locator()
    assert given == StoreLocator("s3://bucket/p", "http://127.0.0.1:1")
    monkeypatch.setenv("TTHF_S3_ENDPOINT_URL", "http://127.0.0.1:2")
    from_env = open_store("s3://bucket/p").locator()
    monkeypatch.delenv("TTHF_S3_ENDPOINT_URL")  # a worker whose environment lacks it still reaches that server
    assert from_env.endpoint_url == "http://127.0.0.1:2" and from_env.open().locator() == from_env
    assert open_store("s3://bucket").locator() == StoreLocator("s3://bucket", None)


def test_local_atomic_write_keeps_old_content_when_the_write_fails(tmp_path: Path) -> None:
    """A real mid-write failure: the file-size limit makes write() fail with EFBIG."""
    store = LocalStore(tmp_path)
    store.write_bytes("f.bin", b"old content")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(StoreError, match="f.bin.*disk space"):
            store.write_bytes("f.bin", b"n" * 1_000_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert store.read_bytes("f.bin") == b"old content"
    assert sorted(os.listdir(tmp_path)) == ["f.bin"]  # no temp file left behind


def test_local_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    a, b = b"a" * 2_000_000, b"b" * 2_000_000
    store.write_bytes("f", a)
    stop = threading.Event()
    seen: set[bytes] = set()

    def read() -> None:
        while not stop.is_set():
            data = store.read_bytes("f")
            seen.add(data[:1] + data[-1:] + str(len(data)).encode())

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(30):
        store.write_bytes("f", b if i % 2 == 0 else a)
    stop.set()
    reader.join()
    assert seen <= {b"aa2000000", b"bb2000000"}
    assert store.list() == ["f"]


def test_local_listing_skips_leftover_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes("d/f", b"x")
    (tmp_path / "d" / ".tthf-tmp-deadbeef-f").write_bytes(b"partial")  # a crashed writer's leftover
    assert store.list() == ["d/f"]


def test_local_write_removes_stale_temp_files_of_killed_writers(tmp_path: Path) -> None:
    import os
    import time

    from tthf.engine.store import STALE_TEMP_SECONDS

    store = LocalStore(tmp_path)
    stale, young, other = (tmp_path / "d" / n for n in (".tthf-tmp-aa-f", ".tthf-tmp-bb-f", ".tthf-tmp-cc-g"))
    stale.parent.mkdir()
    for tmp in (stale, young, other):
        tmp.write_bytes(b"partial")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    store.write_bytes("d/f", b"x")
    assert not stale.exists()  # a killed writer's leftover for this key
    assert young.exists()  # may belong to a writer still in flight
    assert other.exists()  # another key's temp is that key's writer's business
    assert store.read_bytes("d/f") == b"x"


def test_local_permission_error_names_path_and_fix(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(StoreError, match="permissions"):
        LocalStore(tmp_path / "ro").write_bytes("f", b"x")


@pytest.mark.s3
def test_s3_missing_bucket_names_bucket_and_fix(s3_env: str) -> None:
    store = open_store("s3://no-such-bucket-tthf/p")
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-tthf' does not exist.*create it"):
        store.read_bytes("k")


@pytest.mark.s3
def test_s3_unreachable_endpoint_names_the_setting(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    monkeypatch.setenv("TTHF_S3_MAX_ATTEMPTS", "2")
    store = open_store("s3://bucket/p", endpoint_url=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(StoreError) as info:
        store.read_bytes("k")
    message = str(info.value)
    assert "unreachable after 2 attempts" in message and "TTHF_S3_ENDPOINT_URL" in message
    assert "very-secret-value" not in message


@pytest.mark.s3
def test_s3_without_credentials_says_how_to_provide_them(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StoreError, match="no usable S3 credentials.*AWS_PROFILE"):
        open_store(s3_bucket).read_bytes("k")


def test_bad_attempts_setting_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTHF_S3_MAX_ATTEMPTS", "many")
    with pytest.raises(UsageError, match="TTHF_S3_MAX_ATTEMPTS"):
        open_store("s3://bucket/p", endpoint_url="http://127.0.0.1:1")


@pytest.mark.s3
@pytest.mark.slow
def test_s3_read_survives_a_server_outage(s3_env: str) -> None:
    """The server goes down, a read starts, the server comes back 1 s later: the read succeeds.

    Connection refusals are retried with backoff (botocore standard mode), so the read
    spans the outage. Bounded: the retry budget ends within ~30 s even if it failed.
    """
    port = free_port()
    server = start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="outage")
    store = open_store("s3://outage/p", endpoint_url=endpoint)
    store.write_bytes("k", b"survived")
    server.stop()
    outage_s = 1.0
    restarted: list[object] = []
    timer = threading.Timer(outage_s, lambda: restarted.append(start_moto(port)))
    start = time.monotonic()
    timer.start()
    try:
        assert store.read_bytes("k") == b"survived"
        elapsed = time.monotonic() - start
    finally:
        timer.join()
        for srv in restarted:
            srv.stop()  # type: ignore[attr-defined]
    assert elapsed >= outage_s  # the first attempts were refused; a later one succeeded
