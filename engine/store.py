"""One interface over a local folder and ``s3://bucket/prefix`` for data roots and run stores.

Every write is atomic: a reader sees the old bytes or the new bytes, never a partial
file (local: temp file in the same folder, fsync, ``os.replace``; S3: one PUT, or a
multipart upload that becomes visible only when completed). Keys are ``/``-separated
paths relative to the store's root. Errors are ``StoreError`` naming the URI and the
fix; a missing key is the subclass ``KeyNotFoundError`` so callers can tell it apart.

S3 goes through boto3 only, with the standard credential chain (never logged) and the
endpoint from ``endpoint_url``, else ``TTHF_S3_ENDPOINT_URL``, else boto3's default.
Transient failures (connection refused or reset, timeouts, 5xx) are retried with
botocore's "standard" mode: exponential backoff with jitter, ``S3_MAX_ATTEMPTS`` tries
(``TTHF_S3_MAX_ATTEMPTS`` overrides it).

A store holds a client that cannot leave its process; ``Store.locator()`` is what can: a
small frozen ``StoreLocator`` (the URI and the S3 endpoint) whose ``open()`` gives an equal
store in a worker process or on a Ray actor.
"""

from __future__ import annotations

import builtins
import io
import os
import re
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tthf.errors import KeyNotFoundError, StoreError, UsageError

ENDPOINT_ENV = "TTHF_S3_ENDPOINT_URL"
ATTEMPTS_ENV = "TTHF_S3_MAX_ATTEMPTS"
S3_MAX_ATTEMPTS = 10
S3_CONNECT_TIMEOUT_S = 10
S3_READ_TIMEOUT_S = 60
MULTIPART_THRESHOLD = 64 * 1024 * 1024
_TMP_PREFIX = ".tthf-tmp-"
_NO_CREDENTIALS = (
    "no usable S3 credentials; set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
    "(boto3's standard credential chain)"
)


def _clean_key(key: str, *, allow_empty: bool = False) -> str:
    """Normalize a relative key; reject absolute paths and ``..`` so a key never escapes its root."""
    parts = [p for p in key.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts or key.startswith("/"):
        raise UsageError(f"invalid store key {key!r}: keys are relative paths without '..'")
    if not parts and not allow_empty:
        raise UsageError("empty store key: name a file inside the store")
    return "/".join(parts)


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


class Store(ABC):
    """A tree of byte blobs addressed by relative keys."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` atomically, creating parent folders as needed."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """True if ``key`` is a file (not a folder)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys of all files under the folder ``prefix`` (recursive), relative to this store, sorted."""

    @abstractmethod
    def list_dirs(self, prefix: str = "") -> builtins.list[str]:
        """Names of the immediate sub-folders of the folder ``prefix``, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete a file; deleting a missing key is not an error."""

    @abstractmethod
    def uri(self, key: str = "") -> str:
        """Where ``key`` lives, for messages and manifests."""

    @abstractmethod
    def child(self, prefix: str) -> Store:
        """A store rooted at the folder ``prefix`` of this one."""

    @abstractmethod
    def locator(self) -> StoreLocator:
        """How another process opens this store: plain values, picklable."""

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri()!r})"


class LocalStore(Store):
    """A folder on local disk; it is created on the first write."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()

    def _path(self, key: str, *, allow_empty: bool = False) -> Path:
        key = _clean_key(key, allow_empty=allow_empty)
        return self.root / key if key else self.root

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise KeyNotFoundError(f"{path} does not exist") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}; check the path and its permissions") from exc

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = path.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(
                f"cannot write {path}: {exc.strerror or exc}; check free disk space and permissions on {path.parent}"
            ) from exc
        _fsync_dir(path.parent)
        _remove_stale_temps(path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix, allow_empty=True)
        if not base.is_dir():
            return []
        try:
            keys = [
                p.relative_to(self.root).as_posix()
                for p in base.rglob("*")
                if p.is_file() and not p.name.startswith(_TMP_PREFIX)
            ]
        except OSError as exc:
            raise StoreError(f"cannot list {base}: {exc.strerror or exc}; check its permissions") from exc
        return sorted(keys)

    def list_dirs(self, prefix: str = "") -> builtins.list[str]:
        base = self._path(prefix, allow_empty=True)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir())

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot delete {path}: {exc.strerror or exc}; check its permissions") from exc

    def uri(self, key: str = "") -> str:
        return str(self._path(key, allow_empty=True))

    def child(self, prefix: str) -> LocalStore:
        return LocalStore(self._path(prefix, allow_empty=True))

    def locator(self) -> StoreLocator:
        return StoreLocator(self.uri())


#: a temp file this old belongs to a writer that was killed (SIGKILL skips the cleanup)
STALE_TEMP_SECONDS = 3600


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files that killed writers left for ``path``; young ones may still be in flight."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for tmp in path.parent.glob(f"{_TMP_PREFIX}*-{path.name}"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
        except OSError:
            pass  # raced with another writer's cleanup, or not ours to delete


def _fsync_dir(path: Path) -> None:
    """Make the rename durable; some filesystems refuse to open folders, which is harmless."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class S3Store(Store):
    """``s3://bucket/prefix`` through one boto3 client shared with its children."""

    def __init__(self, bucket: str, prefix: str, client: Any, endpoint_url: str | None, attempts: int) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client
        self._endpoint_url = endpoint_url
        self._attempts = attempts

    def _key(self, key: str, *, allow_empty: bool = False) -> str:
        return _join(self.prefix, _clean_key(key, allow_empty=allow_empty))

    def _folder(self, prefix: str) -> str:
        folder = self._key(prefix, allow_empty=True)
        return folder + "/" if folder else ""

    def _fail(self, exc: Exception, action: str, key: str) -> StoreError:
        """Translate a boto3 failure into a StoreError that names the URI and the likely fix."""
        from botocore.exceptions import (
            ClientError,
            CredentialRetrievalError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        where = f"s3://{self.bucket}/{key}"
        endpoint = self._endpoint_url or "the default AWS endpoint"
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
            return StoreError(f"cannot {action} {where}: {_NO_CREDENTIALS}")
        if isinstance(exc, EndpointConnectionError):
            return StoreError(
                f"cannot {action} {where}: {endpoint} unreachable after {self._attempts} attempts; "
                f"check the network and the endpoint (--s3-endpoint-url or {ENDPOINT_ENV})"
            )
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                return KeyNotFoundError(f"{where} does not exist")
            if code == "NoSuchBucket":
                return StoreError(
                    f"cannot {action} {where}: bucket {self.bucket!r} does not exist at {endpoint}; "
                    "create it or fix the URI / endpoint"
                )
            if code in (
                "AccessDenied",
                "403",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "ExpiredToken",
                "InvalidToken",
                "Forbidden",
            ):
                return StoreError(
                    f"cannot {action} {where}: access denied ({code}); check credentials "
                    f"(AWS_PROFILE / AWS_ACCESS_KEY_ID), the bucket policy and the endpoint ({endpoint})"
                )
            return StoreError(
                f"cannot {action} {where}: S3 error {code or exc}; check the endpoint ({endpoint}) "
                "and credentials (AWS_PROFILE / AWS_ACCESS_KEY_ID)"
            )
        return StoreError(
            f"cannot {action} {where}: {type(exc).__name__}: {exc}; check the network and the endpoint "
            f"({endpoint}, --s3-endpoint-url or {ENDPOINT_ENV})"
        )

    def read_bytes(self, key: str) -> bytes:
        full = self._key(key)
        try:
            return self._client.get_object(Bucket=self.bucket, Key=full)["Body"].read()
        except Exception as exc:
            raise self._fail(exc, "read", full) from exc

    def write_bytes(self, key: str, data: bytes) -> None:
        full = self._key(key)
        try:
            if len(data) <= MULTIPART_THRESHOLD:
                self._client.put_object(Bucket=self.bucket, Key=full, Body=data)
            else:
                from boto3.s3.transfer import TransferConfig

                config = TransferConfig(
                    multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD
                )
                self._client.upload_fileobj(io.BytesIO(data), self.bucket, full, Config=config)
        except Exception as exc:
            raise self._fail(exc, "write", full) from exc

    def exists(self, key: str) -> bool:
        full = self._key(key)
        try:
            self._client.head_object(Bucket=self.bucket, Key=full)
            return True
        except Exception as exc:
            err = self._fail(exc, "check", full)
            if isinstance(err, KeyNotFoundError):
                return False
            raise err from exc

    def _paginate(self, folder: str, **kwargs: Any) -> builtins.list[dict[str, Any]]:
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder, **kwargs)
            return list(pages)
        except Exception as exc:
            raise self._fail(exc, "list", folder) from exc

    def list(self, prefix: str = "") -> list[str]:
        folder = self._folder(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = [obj["Key"][strip:] for page in self._paginate(folder) for obj in page.get("Contents", [])]
        return sorted(k for k in keys if not k.endswith("/"))

    def list_dirs(self, prefix: str = "") -> builtins.list[str]:
        folder = self._folder(prefix)
        pages = self._paginate(folder, Delimiter="/")
        return sorted(
            cp["Prefix"][len(folder) :].rstrip("/") for page in pages for cp in page.get("CommonPrefixes", [])
        )

    def delete(self, key: str) -> None:
        full = self._key(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=full)
        except Exception as exc:
            raise self._fail(exc, "delete", full) from exc

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._key(key, allow_empty=True)}".rstrip("/")

    def child(self, prefix: str) -> S3Store:
        return S3Store(
            self.bucket, self._key(prefix, allow_empty=True), self._client, self._endpoint_url, self._attempts
        )

    def locator(self) -> StoreLocator:
        return StoreLocator(self.uri(), self._endpoint_url)


@dataclass(frozen=True)
class StoreLocator:
    """Where a store is and how to reach it: what crosses to worker processes and Ray actors, which open their own.

    ``endpoint_url`` is the S3 endpoint the store was opened with (None: boto3's default), so
    a worker reaches the same server whatever its environment says.
    """

    uri: str
    endpoint_url: str | None = None

    def open(self) -> Store:
        return open_store(self.uri, endpoint_url=self.endpoint_url)


_S3_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/?(?P<prefix>.*)$")


def open_store(uri: str | os.PathLike[str], *, endpoint_url: str | None = None) -> Store:
    """Open a local folder or ``s3://bucket/prefix``; nothing is contacted until the first call."""
    text = os.fspath(uri)
    if text.startswith("s3://"):
        match = _S3_URI.match(text)
        if not match:
            raise UsageError(f"invalid S3 URI {text!r}; use s3://bucket/prefix")
        endpoint = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
        attempts = _attempts()
        return S3Store(match["bucket"], match["prefix"], _s3_client(endpoint, attempts), endpoint, attempts)
    if "://" in text:
        raise UsageError(f"unsupported store URI {text!r}; use a local folder or s3://bucket/prefix")
    return LocalStore(text)


def as_store(root: Store | str | os.PathLike[str]) -> Store:
    """Accept a Store or a URI wherever a store is expected."""
    return root if isinstance(root, Store) else open_store(root)


def _attempts() -> int:
    raw = os.environ.get(ATTEMPTS_ENV, "")
    if not raw:
        return S3_MAX_ATTEMPTS
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(
            f"{ATTEMPTS_ENV}={raw!r}: expected a whole number of attempts >= 1 (default {S3_MAX_ATTEMPTS})"
        )
    return int(raw)


def _s3_client(endpoint_url: str | None, attempts: int) -> Any:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import CredentialRetrievalError, NoCredentialsError, PartialCredentialsError

    config = Config(
        retries={"max_attempts": attempts, "mode": "standard"},
        connect_timeout=S3_CONNECT_TIMEOUT_S,
        read_timeout=S3_READ_TIMEOUT_S,
    )
    try:
        return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
    except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as exc:
        raise StoreError(f"cannot set up the S3 client: {_NO_CREDENTIALS}") from exc
    except Exception as exc:  # bad endpoint URL, unknown region, broken AWS config file
        raise StoreError(
            f"cannot set up the S3 client ({type(exc).__name__}: {exc}); check the endpoint "
            f"(--s3-endpoint-url or {ENDPOINT_ENV}) and the AWS configuration (AWS_PROFILE, AWS_DEFAULT_REGION)"
        ) from exc
