"""Vendor input files: local paths or ``s3://`` URIs, a file or a folder of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tthf.engine.store import Store, open_store
from tthf.errors import UsageError


@dataclass(frozen=True)
class Source:
    """One input file, read through the store layer (local disk or S3, boto3 credentials)."""

    store: Store
    key: str

    @property
    def uri(self) -> str:
        return self.store.uri(self.key)

    def read(self) -> bytes:
        return self.store.read_bytes(self.key)


def _split(uri: str) -> tuple[str, str]:
    """(parent, name) of a path or S3 URI; ("", "") for a bare bucket, which can only be a folder."""
    head, sep, name = uri.rstrip("/").rpartition("/")
    if not sep:
        return ".", name
    if head in ("s3:", "s3:/"):
        return "", ""
    return head or "/", name


def expand(uris: Sequence[str], suffixes: tuple[str, ...], *, endpoint_url: str | None = None) -> list[Source]:
    """Files named by ``uris``, folders expanded (recursively) to their files ending in ``suffixes``."""
    out: list[Source] = []
    for uri in uris:
        parent, name = _split(uri)
        if name:
            store = open_store(parent, endpoint_url=endpoint_url)
            if store.exists(name):
                out.append(Source(store, name))
                continue
        folder = open_store(uri, endpoint_url=endpoint_url)
        found = [Source(folder, k) for k in folder.list("") if k.lower().endswith(suffixes)]
        if not found:
            raise UsageError(f"{uri}: no such file, and no folder with {' or '.join(suffixes)} files; check the path")
        out.extend(found)
    return out
