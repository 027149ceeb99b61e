"""Ledger records (version 1): ids, layout checks, and the parsed form of stored bytes.

Design decisions
================

Record layout (version 1).
    ``{"end", "id", "key", "prev", "project", "resources", "seq", "sig", "start",
    "usage", "v"}``: ``start``/``end`` are UTC times ``YYYY-MM-DDTHH:MM:SSZ``;
    ``usage`` maps meter to integer resource-seconds and equals the sum of
    ``resources`` (``[{"uid", "kind", "usage", "name"?}]``, sorted by uid; empty when
    the ledger keeps totals only, ``Ledger(detail=False)``, whose records do not grow
    with the number of resources); ``seq``
    counts records of the project from 0; ``prev`` is the lowercase hex SHA-256 of the
    previous record's stored bytes (64 zeros for seq 0); ``key`` is the signing key id;
    ``sig`` is the unpadded base64url Ed25519 signature of the canonical JSON of the
    record without ``sig``. A record's hash is the SHA-256 of its stored bytes, so
    ``sha256sum`` of the previous file is what ``prev`` must say.

Idempotent ids.
    ``id`` is ``<project>/<start as YYYYMMDDTHHMMSSZ>``: closing the same interval again
    (after a crash or restart) yields the same id, and the store refuses a different
    record under an existing id. Ed25519 signatures are deterministic, so re-sealing the
    same usage with the same key and chain position gives identical bytes.
    :meth:`Ledger.append` compares an existing record's usage with the new one: equal
    is success (nothing written), different raises :class:`RecordConflict` carrying the
    stored record, which stays authoritative.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stratus.core.metering import IntervalUsage, ResourceUsage, format_time, parse_time

from .canonical import CanonicalError, _unb64u, canonical_json, parse_canonical

__all__ = [
    "GENESIS",
    "Problem",
    "Record",
    "RecordConflict",
    "RecordError",
    "parse_record_id",
    "record_id",
]

RECORD_VERSION = 1
GENESIS = "0" * 64

_PROJECT_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ID_RE = re.compile(r"^(?P<project>[a-z0-9][-a-z0-9.]*)/(?P<stamp>\d{8}T\d{6}Z)$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_METER_RE = re.compile(r"^[a-z][a-z0-9-]*(/[A-Za-z0-9._-]+)?$")
_RECORD_KEYS = frozenset({"v", "id", "project", "seq", "start", "end", "usage", "resources", "prev", "key", "sig"})
_RESOURCE_KEYS = frozenset({"uid", "kind", "usage", "name"})


def record_id(project: str, start: datetime | int) -> str:
    """``<project>/<YYYYMMDDTHHMMSSZ>``: sortable by time, safe as a file or object key."""
    if not isinstance(project, str) or len(project) > 253 or not _PROJECT_RE.match(project):
        raise ValueError(f"project name {project!r} is not a DNS subdomain name")
    return f"{project}/{format_time(start).replace('-', '').replace(':', '')}"


def parse_record_id(rid: str) -> tuple[str, datetime]:
    """The project and interval start named by a record id."""
    m = _ID_RE.match(rid) if isinstance(rid, str) else None
    if not m or not _PROJECT_RE.match(m.group("project")):
        raise ValueError(f"not a ledger record id: {rid!r}")
    s = m.group("stamp")
    start = parse_time(f"{s[0:4]}-{s[4:6]}-{s[6:8]}T{s[9:11]}:{s[11:13]}:{s[13:15]}Z")
    if record_id(m.group("project"), start) != rid:
        raise ValueError(f"not a ledger record id: {rid!r}")
    return m.group("project"), start


class Problem(enum.StrEnum):
    """What is wrong with a record; usable as a condition reason."""

    MALFORMED = "Malformed"
    NOT_CANONICAL = "NotCanonical"
    UNKNOWN_KEY = "UnknownKey"
    BAD_SIGNATURE = "BadSignature"
    DUPLICATE = "Duplicate"
    REORDERED = "Reordered"
    GAP = "Gap"
    BROKEN_CHAIN = "BrokenChain"
    TIME_GAP = "TimeGap"
    TIME_OVERLAP = "TimeOverlap"
    TRUNCATED = "Truncated"


class RecordError(ValueError):
    """Bytes that are not a well-formed version-1 record."""

    def __init__(self, problem: Problem, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


class RecordConflict(Exception):
    """A different record already exists under this id; the stored one stands."""

    def __init__(self, record_id: str, detail: str = "", existing: Record | None = None) -> None:
        super().__init__(f"{record_id}: {detail or 'a different record already exists under this id'}")
        self.record_id = record_id
        self.existing = existing


@dataclass(frozen=True, eq=False)
class Record:
    """One signed usage record: its stored bytes and their parsed body.

    Build with :func:`seal` or :meth:`from_bytes` (which checks everything but the
    signature and the chain); equality is equality of the stored bytes.
    """

    data: bytes
    body: dict[str, Any] = field(repr=False)
    hash: str = field(repr=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)

    @property
    def id(self) -> str:
        return self.body["id"]

    @property
    def project(self) -> str:
        return self.body["project"]

    @property
    def seq(self) -> int:
        return self.body["seq"]

    @property
    def start(self) -> datetime:
        return parse_time(self.body["start"])

    @property
    def end(self) -> datetime:
        return parse_time(self.body["end"])

    @property
    def usage(self) -> dict[str, int]:
        return self.body["usage"]

    @property
    def resources(self) -> list[dict[str, Any]]:
        return self.body["resources"]

    @property
    def prev(self) -> str:
        return self.body["prev"]

    @property
    def key_id(self) -> str:
        return self.body["key"]

    @property
    def signature(self) -> bytes:
        return _unb64u(self.body["sig"])

    def signed_bytes(self) -> bytes:
        """The canonical JSON of the record without ``sig``: what the signature covers.

        Cut out of the stored bytes: removing one member of a canonical object leaves
        the others canonical, and the schema allows ``"sig":"`` nowhere else.
        """
        member = b',"sig":"' + self.body["sig"].encode("ascii") + b'"'
        if self.data.count(member) == 1:
            return self.data.replace(member, b"", 1)
        return canonical_json({k: v for k, v in self.body.items() if k != "sig"})

    def to_usage(self) -> IntervalUsage:
        return IntervalUsage(
            project=self.project,
            start=self.start,
            end=self.end,
            totals=dict(self.usage),
            resources=tuple(ResourceUsage.from_dict(r) for r in self.resources),
        )

    def matches(self, usage: IntervalUsage) -> bool:
        """Whether this record says what ``usage`` says (its totals, if it has no lines)."""
        detail = bool(self.body["resources"])
        return self.body["project"] == usage.project and _payload(usage, detail) == {
            k: self.body[k] for k in ("start", "end", "usage", "resources")
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> Record:
        try:
            body = parse_canonical(data)
        except CanonicalError as e:
            problem = Problem.NOT_CANONICAL if "canonical form" in str(e) else Problem.MALFORMED
            raise RecordError(problem, str(e)) from None
        _check_record(body)
        return cls(bytes(data), body, hashlib.sha256(data).hexdigest())


def _payload(usage: IntervalUsage, detail: bool = True) -> dict[str, Any]:
    return {
        "start": format_time(usage.start),
        "end": format_time(usage.end),
        "usage": {k: v for k, v in sorted(usage.totals.items()) if v},
        "resources": [r.to_dict() for r in sorted(usage.resources, key=lambda r: r.uid)] if detail else [],
    }


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_usage_map(where: str, m: Any) -> None:
    if not isinstance(m, dict):
        raise RecordError(Problem.MALFORMED, f"{where} is not an object")
    for meter, v in m.items():
        if not _METER_RE.match(meter):
            raise RecordError(Problem.MALFORMED, f"{where}: invalid meter name {meter!r}")
        if not _is_count(v):
            raise RecordError(Problem.MALFORMED, f"{where}.{meter} is not a non-negative integer")


def _check_record(b: Any) -> None:
    def bad(detail: str) -> RecordError:
        return RecordError(Problem.MALFORMED, detail)

    if not isinstance(b, dict):
        raise bad("a record is a JSON object")
    if set(b) != _RECORD_KEYS:
        missing, extra = sorted(_RECORD_KEYS - set(b)), sorted(set(b) - _RECORD_KEYS)
        raise bad(f"record members: missing {missing}, unexpected {extra}")
    if b["v"] != RECORD_VERSION or isinstance(b["v"], bool):
        raise bad(f"unsupported record version {b['v']!r}")
    if not isinstance(b["project"], str) or not _PROJECT_RE.match(b["project"]) or len(b["project"]) > 253:
        raise bad(f"invalid project {b['project']!r}")
    try:
        start, end = parse_time(b["start"]), parse_time(b["end"])
    except ValueError as e:
        raise bad(str(e)) from None
    if end <= start:
        raise bad(f"interval ends ({b['end']}) before it starts ({b['start']})")
    if b["id"] != record_id(b["project"], start):
        raise bad(f"id {b['id']!r} does not match project and start")
    if not _is_count(b["seq"]):
        raise bad("seq is not a non-negative integer")
    if not isinstance(b["prev"], str) or not _HEX64_RE.match(b["prev"]):
        raise bad("prev is not a lowercase hex SHA-256")
    if b["seq"] == 0 and b["prev"] != GENESIS:
        raise bad("the first record of a chain must have prev = 64 zeros")
    if not isinstance(b["key"], str) or not b["key"]:
        raise bad("key id missing")
    try:
        if len(_unb64u(b["sig"])) != 64:
            raise ValueError("wrong length")
    except (ValueError, TypeError) as e:
        raise bad(f"sig is not a base64url Ed25519 signature ({e})") from None
    _check_usage_map("usage", b["usage"])
    if not isinstance(b["resources"], list):
        raise bad("resources is not a list")
    last_uid = None
    for i, r in enumerate(b["resources"]):
        if not isinstance(r, dict) or not {"uid", "kind", "usage"} <= set(r) <= _RESOURCE_KEYS:
            raise bad(f"resources[{i}] members must be uid, kind, usage and optionally name")
        if not all(isinstance(r[k], str) and r[k] for k in r if k != "usage"):
            raise bad(f"resources[{i}]: uid, kind and name are non-empty strings")
        if last_uid is not None and r["uid"] <= last_uid:
            raise bad(f"resources[{i}]: not sorted by uid, or a uid repeats")
        last_uid = r["uid"]
        _check_usage_map(f"resources[{i}].usage", r["usage"])


def _check_totals(b: Mapping[str, Any]) -> str | None:
    """Why the totals are not the sum of the resource lines, or None if they are.

    Checked after the signature, so an edited number reads as what it is (tampering).
    A record without lines (sealed with ``detail=False``) has only its totals.
    """
    if not b["resources"]:
        return None
    totals: dict[str, int] = {}
    for r in b["resources"]:
        for meter, v in r["usage"].items():
            totals[meter] = totals.get(meter, 0) + v
    if {k: v for k, v in totals.items() if v} != {k: v for k, v in b["usage"].items() if v}:
        return "usage is not the sum of the resource lines"
    return None
