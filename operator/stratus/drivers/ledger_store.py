"""Append-only storage for usage-ledger records.

A store maps record ids (``<project>/<YYYYMMDDTHHMMSSZ>``, see
:func:`stratus.core.ledger.record_id`) to the record's bytes. It never parses them and
never rewrites them.

Design decisions
================

The interface (:class:`LedgerStore`) is five methods: ``put``, ``get``, ``ids``,
``projects`` and ``last_id``. ``put`` is the only write and is idempotent: storing the
same bytes again returns False, storing different bytes under an existing id raises
:class:`~stratus.core.ledger.RecordConflict`. Nothing deletes or replaces a record;
retention (if ever) is a storage policy, not code here.

Keys are laid out as ``<project>/<year>/<YYYYMMDDTHHMMSSZ>.json`` in every backend:
lexical order is time order, a year of hourly records (8,760) stays a small folder or
listing page, and the last record of a chain is found by listing only the newest year.
Ids are validated before they become paths or keys, so none can escape the root.

:class:`DirectoryLedgerStore` (a persistent volume): each record is written to a
hidden temporary file in the target folder, flushed with ``fsync``, then published with
``link(2)``, which fails if the name exists, so a record appears whole or not at all and
is never overwritten, even by a racing writer. The folder is fsynced after. Files are
created read-only (0444). Where a filesystem refuses hard links, writing falls back to
``O_CREAT|O_EXCL`` on the final name (still never overwriting, but a crash mid-write can
leave a short file, which verification reports as malformed).

:class:`MemoryLedgerStore` is a dict, for unit tests and dry runs.

:class:`S3LedgerStore` (boto3) uses conditional writes (``If-None-Match: *``) so the
object store itself refuses to overwrite; a refusal is answered by reading the object
and comparing. For an S3 server without conditional writes set
``conditional_writes=False``: it checks first and then writes, which has a race window
that the single-writer operator does not exercise. With a bucket that has Object Lock
enabled, ``retain_days`` makes each record immutable (COMPLIANCE mode) for that long.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stratus.core.ledger import RecordConflict, parse_record_id

__all__ = ["DirectoryLedgerStore", "LedgerStore", "MemoryLedgerStore", "S3LedgerStore"]

_FILE_RE = re.compile(r"^(\d{8}T\d{6}Z)\.json$")
_YEAR_RE = re.compile(r"^\d{4}$")
_PROJECT_DIR_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _layout(record_id: str) -> tuple[str, str, str]:
    """(project, year, file name) for a valid record id; ValueError otherwise."""
    project, _ = parse_record_id(record_id)
    stamp = record_id.rsplit("/", 1)[1]
    return project, stamp[:4], f"{stamp}.json"


def _same_or_conflict(record_id: str, existing: bytes, data: bytes) -> bool:
    if existing == data:
        return False
    raise RecordConflict(record_id, "the store already holds a different record under this id")


class LedgerStore(ABC):
    """Append-only record storage. Implementations must make ``put`` refuse overwrites."""

    @abstractmethod
    def put(self, record_id: str, data: bytes) -> bool:
        """Store ``data`` under a new id: True if written, False if these exact bytes
        were already there; RecordConflict if different bytes are."""

    @abstractmethod
    def get(self, record_id: str) -> bytes | None:
        """The stored bytes, or None."""

    @abstractmethod
    def ids(self, project: str) -> list[str]:
        """Every record id of the project, oldest first."""

    @abstractmethod
    def projects(self) -> list[str]:
        """Projects with at least one record, sorted."""

    def last_id(self, project: str) -> str | None:
        """The newest record id of the project (the chain head), or None."""
        ids = self.ids(project)
        return ids[-1] if ids else None

    def read(self, project: str) -> Iterator[tuple[str, bytes]]:
        """(id, bytes) of the project's records, oldest first."""
        for rid in self.ids(project):
            data = self.get(rid)
            if data is not None:
                yield rid, data


class MemoryLedgerStore(LedgerStore):
    """A store in a dict; thread-safe; for tests."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, record_id: str, data: bytes) -> bool:
        _layout(record_id)
        data = bytes(data)
        with self._lock:
            existing = self._data.get(record_id)
            if existing is not None:
                return _same_or_conflict(record_id, existing, data)
            self._data[record_id] = data
            return True

    def get(self, record_id: str) -> bytes | None:
        return self._data.get(record_id)

    def ids(self, project: str) -> list[str]:
        prefix = f"{project}/"
        return sorted(k for k in list(self._data) if k.startswith(prefix))

    def projects(self) -> list[str]:
        return sorted({k.split("/", 1)[0] for k in list(self._data)})

    # test helpers: simulate what an attacker or a broken disk does
    def tamper(self, record_id: str, data: bytes | None) -> None:
        """Replace (or with None, delete) a record behind the ledger's back. Tests only."""
        with self._lock:
            if data is None:
                self._data.pop(record_id, None)
            else:
                self._data[record_id] = data


class DirectoryLedgerStore(LedgerStore):
    """Records as files under ``root`` on a persistent volume."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync

    def _path(self, record_id: str) -> Path:
        project, year, name = _layout(record_id)
        return self.root / project / year / name

    def _sync_dir(self, path: Path) -> None:
        if not self.fsync:
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _makedirs(self, folder: Path) -> None:
        missing = []
        p = folder
        while not p.exists():
            missing.append(p)
            p = p.parent
        folder.mkdir(parents=True, exist_ok=True)
        for m in reversed(missing):
            self._sync_dir(m.parent)

    def _write_new(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def put(self, record_id: str, data: bytes) -> bool:
        path = self._path(record_id)
        data = bytes(data)
        existing = self.get(record_id)
        if existing is not None:
            return _same_or_conflict(record_id, existing, data)
        self._makedirs(path.parent)
        tmp = path.parent / f".{path.stem}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        self._write_new(tmp, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _same_or_conflict(record_id, path.read_bytes(), data)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV):
                raise
            try:
                self._write_new(path, data)  # no hard links here: exclusive create instead
            except FileExistsError:
                return _same_or_conflict(record_id, path.read_bytes(), data)
        finally:
            tmp.unlink(missing_ok=True)
        self._sync_dir(path.parent)
        return True

    def get(self, record_id: str) -> bytes | None:
        try:
            return self._path(record_id).read_bytes()
        except FileNotFoundError:
            return None

    def _years(self, project: str) -> list[Path]:
        folder = self.root / project
        if not _PROJECT_DIR_RE.match(project) or not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if _YEAR_RE.match(p.name) and p.is_dir())

    def _ids_in(self, project: str, year: Path) -> list[str]:
        return sorted(f"{project}/{m.group(1)}" for n in os.listdir(year) if (m := _FILE_RE.match(n)))

    def ids(self, project: str) -> list[str]:
        out: list[str] = []
        for year in self._years(project):
            out.extend(self._ids_in(project, year))
        return out

    def last_id(self, project: str) -> str | None:
        for year in reversed(self._years(project)):
            ids = self._ids_in(project, year)
            if ids:
                return ids[-1]
        return None

    def projects(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _PROJECT_DIR_RE.match(p.name) and self.last_id(p.name))


class S3LedgerStore(LedgerStore):
    """Records as objects ``<prefix><project>/<year>/<stamp>.json`` in an S3 bucket.

    ``client`` is a boto3 S3 client (credentials and endpoint are the caller's business).
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "ledger/",
        *,
        conditional_writes: bool = True,
        retain_days: int | None = None,
    ) -> None:
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.conditional_writes = conditional_writes
        self.retain_days = retain_days

    def _key(self, record_id: str) -> str:
        project, year, name = _layout(record_id)
        return f"{self.prefix}{project}/{year}/{name}"

    @staticmethod
    def _error(e: Exception) -> tuple[str, int]:
        response = getattr(e, "response", None) or {}
        return (str(response.get("Error", {}).get("Code", "")),
                int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0))

    def put(self, record_id: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        key = self._key(record_id)
        data = bytes(data)
        if not self.conditional_writes:
            existing = self.get(record_id)
            if existing is not None:
                return _same_or_conflict(record_id, existing, data)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": data, "ContentType": "application/json"}
        if self.conditional_writes:
            kwargs["IfNoneMatch"] = "*"
        if self.retain_days:
            kwargs["ObjectLockMode"] = "COMPLIANCE"
            kwargs["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=self.retain_days)
        try:
            self.client.put_object(**kwargs)
        except ClientError as e:
            code, status = self._error(e)
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                existing = self.get(record_id)
                if existing is None:  # a concurrent write not yet visible: let the caller retry
                    raise
                return _same_or_conflict(record_id, existing, data)
            raise
        return True

    def get(self, record_id: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(record_id))
        except ClientError as e:
            code, status = self._error(e)
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return None
            raise
        return response["Body"].read()

    def _list(self, prefix: str, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        yield from self.client.get_paginator("list_objects_v2").paginate(**kwargs)

    def _ids_under(self, project: str, prefix: str) -> list[str]:
        out = []
        for page in self._list(prefix):
            for obj in page.get("Contents", []):
                m = _FILE_RE.match(obj["Key"].rsplit("/", 1)[-1])
                if m:
                    out.append(f"{project}/{m.group(1)}")
        return sorted(out)

    def _years(self, project: str) -> list[str]:
        years = set()
        for page in self._list(f"{self.prefix}{project}/", "/"):
            for cp in page.get("CommonPrefixes", []):
                y = cp["Prefix"].rstrip("/").rsplit("/", 1)[-1]
                if _YEAR_RE.match(y):
                    years.add(y)
        return sorted(years)

    def ids(self, project: str) -> list[str]:
        if not _PROJECT_DIR_RE.match(project):
            return []
        return self._ids_under(project, f"{self.prefix}{project}/")

    def last_id(self, project: str) -> str | None:
        if not _PROJECT_DIR_RE.match(project):
            return None
        for year in reversed(self._years(project)):
            ids = self._ids_under(project, f"{self.prefix}{project}/{year}/")
            if ids:
                return ids[-1]
        return None

    def projects(self) -> list[str]:
        names = set()
        for page in self._list(self.prefix, "/"):
            for cp in page.get("CommonPrefixes", []):
                name = cp["Prefix"][len(self.prefix):].rstrip("/")
                if _PROJECT_DIR_RE.match(name):
                    names.add(name)
        return sorted(names)
