"""The usage ledger: canonical, signed, hash-chained usage records; verification; export.

Each closed interval of a project (:class:`stratus.core.metering.IntervalUsage`) becomes
one record. Records are canonical JSON, signed with Ed25519 and chained per project by
the SHA-256 of the previous record. They are written once to an append-only store
(:mod:`stratus.drivers.ledger_store`) and never rewritten. Anyone holding the published
public keys can verify a chain with :func:`verify`.

Design decisions
================

Canonical JSON (the exact bytes that are signed, hashed and stored).
    1. Values are objects, arrays, strings, integers, ``true``, ``false`` and ``null``.
       Floating-point numbers are refused (``1.0``, ``1e3``, ``NaN``, ``Infinity``).
    2. Integers are written in shortest decimal form: an optional ``-``, no ``+``, no
       leading zeros, no exponent, no ``-0``. Their size is unbounded: byte-seconds
       exceed 2**53 quickly, so readers must parse integers exactly, not as doubles.
    3. Object member names are ASCII strings, unique within their object, and members
       are sorted by name in ascending byte (= code point) order.
    4. Strings are UTF-8 (no byte-order mark, no lone surrogates). Only these are
       escaped: ``"`` as ``\\"``, ``\\`` as ``\\\\``, U+0008/0009/000A/000C/000D as
       ``\\b \\t \\n \\f \\r``, and every other character below U+0020 as ``\\u00xx``
       with lowercase hex. Every other character, ``/`` and non-ASCII included, is
       written as itself.
    5. No whitespace outside strings: the separators are ``,`` and ``:``. No trailing
       newline.
    Within these limits (ASCII member names, integers below 2**53 in magnitude) this
    is byte-for-byte RFC 8785 (JCS); the only divergence is that large integers keep
    their exact digits instead of JCS's double formatting. A reader rejects any record
    whose stored bytes are not exactly the canonical form of what they parse to, so a
    record has one and only one encoding.

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

One chain per project.
    Projects are metered and exported independently, so each has its own chain; the
    writer needs no global lock and deleting a project's history is detectable from its
    own chain. A chain's tail can only be proven complete against a published head
    (:class:`ChainHead`, e.g. in the Project's status or a metric), which
    ``verify(..., expect_heads=...)`` checks; records are written for every interval,
    usage or not, so a missing hour is a gap, not silence.

Keys.
    The key id is the RFC 7638 JWK thumbprint of the Ed25519 public key (base64url
    SHA-256 of ``{"crv":"Ed25519","kty":"OKP","x":...}``), computable by anyone from the
    key alone. Public keys are published as a JWK Set (:meth:`Keyring.to_jwks`).
    Rotation: sign new records with the new key and keep the old public keys in the
    keyring; every record names its key, so old records stay verifiable.

Verification reports the first bad record.
    :func:`verify` walks records in the order given (the store lists them by time) and
    stops at the first problem: unparsable or non-canonical bytes, an unknown key, a
    bad signature, a duplicate, a record out of order, a missing sequence number, a
    broken hash link, a gap or overlap in time, or a chain shorter than a published head.
    Each finding names the position, record id, sequence and a human message; problems
    are CamelCase words usable as a condition reason.

Export selects records by start time.
    ``export_*(records, since=, until=)`` takes records whose interval starts in
    ``[since, until)``, so consecutive exports (month after month) partition the ledger:
    no record is counted twice or dropped. Verify before exporting.
"""

from __future__ import annotations

import base64
import csv
import enum
import hashlib
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from stratus.core.metering import (
    IntervalUsage,
    ResourceUsage,
    UsageTracker,
    format_time,
    parse_time,
    to_epoch,
)

__all__ = [
    "GENESIS",
    "CanonicalError",
    "ChainError",
    "ChainHead",
    "CloseReport",
    "Finding",
    "Keyring",
    "Ledger",
    "Problem",
    "PublicKey",
    "Record",
    "RecordConflict",
    "RecordError",
    "RecordStore",
    "Signer",
    "Verification",
    "canonical_json",
    "close_due",
    "export_csv",
    "export_json",
    "export_rows",
    "parse_canonical",
    "parse_record_id",
    "record_id",
    "seal",
    "select",
    "usage_totals",
    "verify",
]

RECORD_VERSION = 1
GENESIS = "0" * 64

_PROJECT_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ID_RE = re.compile(r"^(?P<project>[a-z0-9][-a-z0-9.]*)/(?P<stamp>\d{8}T\d{6}Z)$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_METER_RE = re.compile(r"^[a-z][a-z0-9-]*(/[A-Za-z0-9._-]+)?$")
_RECORD_KEYS = frozenset({"v", "id", "project", "seq", "start", "end", "usage", "resources", "prev", "key", "sig"})
_RESOURCE_KEYS = frozenset({"uid", "kind", "usage", "name"})


# --------------------------------------------------------------------------- canonical JSON


class CanonicalError(ValueError):
    """A value that has no canonical JSON form, or bytes that are not canonical JSON."""


def _check_canonical(value: Any, path: str = "$") -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise CanonicalError(f"{path}: string is not valid Unicode (lone surrogate)") from None
        return
    if isinstance(value, float):
        raise CanonicalError(f"{path}: floating-point number {value!r}; use an integer")
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str) or not k.isascii():
                raise CanonicalError(f"{path}: member name {k!r} is not an ASCII string")
            _check_canonical(v, f"{path}.{k}")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_canonical(v, f"{path}[{i}]")
        return
    raise CanonicalError(f"{path}: {type(value).__name__} has no JSON form")


def canonical_json(value: Any) -> bytes:
    """The canonical JSON bytes of ``value`` (see the module docstring for the rules)."""
    _check_canonical(value)
    return _dumps(value)


def _no_float(text: str) -> Any:
    raise CanonicalError(f"floating-point number {text}")


def _dumps(value: Any) -> bytes:
    """Serialise without the type walk: only for values already known to be canonical-safe."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def parse_canonical(data: bytes) -> Any:
    """Parse bytes that must be canonical JSON; anything else raises CanonicalError.

    Parsing then re-serialising must give the same bytes back, which also refuses
    duplicate member names (only one survives the parse), any whitespace, unsorted
    members and alternative spellings of numbers and strings.
    """
    data = bytes(data)
    try:
        value = json.loads(data.decode("utf-8"), parse_float=_no_float, parse_constant=_no_float)
    except CanonicalError:
        raise
    except (UnicodeDecodeError, ValueError) as e:
        raise CanonicalError(f"not JSON: {e}") from None
    try:
        again = _dumps(value)
    except UnicodeEncodeError:
        raise CanonicalError("string is not valid Unicode (lone surrogate)") from None
    if again != data:
        raise CanonicalError("valid JSON but not in canonical form")
    if not data.isascii():
        _check_canonical(value)  # non-ASCII bytes: make sure none is in a member name
    return value


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(text: str) -> bytes:
    """Decode unpadded base64url, refusing any other spelling of the same bytes."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64u(raw) != text:
        raise ValueError("non-canonical base64url")
    return raw


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key (32 raw bytes) and its key id."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> str:
        """RFC 7638 JWK thumbprint (SHA-256, base64url)."""
        return _b64u(hashlib.sha256(canonical_json({"crv": "Ed25519", "kty": "OKP", "x": _b64u(self.raw)})).digest())

    def _key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.raw)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self._key().verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def pem(self) -> bytes:
        return self._key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def jwk(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64u(self.raw), "kid": self.key_id, "alg": "EdDSA", "use": "sig"}

    @classmethod
    def from_pem(cls, pem: bytes | str) -> PublicKey:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PublicKey:
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise ValueError("not an Ed25519 JWK")
        key = cls(_unb64u(jwk["x"]))
        if "kid" in jwk and jwk["kid"] != key.key_id:
            raise ValueError(f"JWK kid {jwk['kid']!r} is not the key's thumbprint {key.key_id!r}")
        return key


class Signer:
    """An Ed25519 signing key, kept in a Kubernetes Secret as PEM (PKCS#8) or 32 raw bytes."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = PublicKey(
            private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        self.key_id = self.public_key.key_id

    def __repr__(self) -> str:  # never show key material
        return f"Signer(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes | str, password: bytes | None = None) -> Signer:
        key = serialization.load_pem_private_key(pem.encode() if isinstance(pem, str) else pem, password)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        return cls(key)

    @classmethod
    def from_raw(cls, seed: bytes) -> Signer:
        if len(seed) != 32:
            raise ValueError("an Ed25519 private key is a 32-byte seed")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def private_raw(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


class Keyring:
    """Public keys by key id: what a verifier trusts. Old keys stay after a rotation."""

    def __init__(self, keys: Iterable[PublicKey | Signer] = ()) -> None:
        self._keys: dict[str, PublicKey] = {}
        for k in keys:
            self.add(k)

    def add(self, key: PublicKey | Signer) -> str:
        pk = key.public_key if isinstance(key, Signer) else key
        self._keys[pk.key_id] = pk
        return pk.key_id

    def get(self, key_id: str) -> PublicKey | None:
        return self._keys.get(key_id)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def to_jwks(self) -> dict[str, Any]:
        return {"keys": [self._keys[k].jwk() for k in sorted(self._keys)]}

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> Keyring:
        return cls(PublicKey.from_jwk(j) for j in jwks["keys"])

    @classmethod
    def from_pems(cls, pems: Iterable[bytes | str]) -> Keyring:
        return cls(PublicKey.from_pem(p) for p in pems)


# --------------------------------------------------------------------------- records


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


class ChainError(ValueError):
    """A record that would not continue its chain (wrong project, gap or overlap)."""


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


@dataclass(frozen=True)
class ChainHead:
    """The newest record of a project's chain: what the next record links to.

    Publish it (status, metric, a signed checkpoint) so a truncated chain is detectable.
    """

    project: str
    seq: int
    hash: str
    end: datetime
    record_id: str

    @classmethod
    def of(cls, record: Record) -> ChainHead:
        return cls(record.project, record.seq, record.hash, record.end, record.id)

    def to_dict(self) -> dict[str, Any]:
        return {"project": self.project, "seq": self.seq, "hash": self.hash, "end": format_time(self.end),
                "recordId": self.record_id}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ChainHead:
        return cls(d["project"], int(d["seq"]), d["hash"], parse_time(d["end"]), d["recordId"])


def seal(usage: IntervalUsage, prev: ChainHead | None, signer: Signer, *, detail: bool = True) -> Record:
    """Turn a closed interval into a signed record linked after ``prev`` (None: first).

    ``detail=False`` leaves out the per-resource lines and keeps only the totals.
    """
    rid = record_id(usage.project, usage.start)
    if prev is None:
        seq, prev_hash = 0, GENESIS
    else:
        if prev.project != usage.project:
            raise ChainError(f"cannot chain {rid} after a record of project {prev.project}")
        if to_epoch(prev.end) != to_epoch(usage.start):
            raise ChainError(
                f"{rid}: the chain ends at {format_time(prev.end)}, the interval starts at "
                f"{format_time(usage.start)}"
            )
        seq, prev_hash = prev.seq + 1, prev.hash
    body: dict[str, Any] = {
        "v": RECORD_VERSION,
        "id": rid,
        "project": usage.project,
        "seq": seq,
        "prev": prev_hash,
        "key": signer.key_id,
        **_payload(usage, detail),
    }
    _check_usage_map("usage", body["usage"])
    inconsistent = _check_totals(body)
    if inconsistent:
        raise ValueError(f"{rid}: {inconsistent}")
    body["sig"] = _b64u(signer.sign(canonical_json(body)))
    data = _dumps(body)  # the walk above covered everything but the (ASCII) signature
    return Record(data, body, hashlib.sha256(data).hexdigest())


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class Finding:
    """The first bad record: where it is and what is wrong with it."""

    problem: Problem
    index: int
    record_id: str | None
    seq: int | None
    project: str | None
    detail: str

    def __str__(self) -> str:
        where = f"record #{self.index}"
        if self.record_id is not None:
            where += f" ({self.record_id}, seq {self.seq})"
        return f"{where}: {self.problem.value}: {self.detail}"


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify`; truthy when every record checked out."""

    ok: bool
    checked: int
    heads: dict[str, ChainHead]
    error: Finding | None = None

    def __bool__(self) -> bool:
        return self.ok


@dataclass
class _ChainState:
    expected_seq: int = 0
    prev_hash: str = GENESIS
    prev_end: int | None = None
    seen: dict[int, tuple[str, int]] = field(default_factory=dict)  # seq -> (hash, index)


def verify(
    records: Iterable[Record | bytes],
    keyring: Keyring,
    *,
    anchors: Mapping[str, ChainHead] | None = None,
    expect_heads: Mapping[str, ChainHead] | None = None,
) -> Verification:
    """Check signatures, hash links, sequence and time continuity; report the first bad record.

    ``records`` may mix projects; each project's records must form one chain in the
    order given. A chain must start at seq 0, or right after its entry in ``anchors``
    (a head verified earlier). ``expect_heads`` are published heads the chains must
    reach, which catches a deleted tail.
    """
    items = list(records)
    parsed: list[Record | RecordError] = []
    positions: dict[tuple[str, int], list[int]] = {}
    for i, item in enumerate(items):
        if isinstance(item, Record):
            rec: Record | RecordError = item
        else:
            try:
                rec = Record.from_bytes(item)
            except RecordError as e:
                rec = e
        parsed.append(rec)
        if isinstance(rec, Record):
            positions.setdefault((rec.project, rec.seq), []).append(i)

    chains: dict[str, _ChainState] = {}
    heads: dict[str, ChainHead] = {}
    anchors = anchors or {}

    def fail(problem: Problem, i: int, rec: Record | None, detail: str) -> Verification:
        f = Finding(problem, i, rec.id if rec else None, rec.seq if rec else None, rec.project if rec else None,
                    detail)
        return Verification(False, i, heads, f)

    for i, rec in enumerate(parsed):
        if isinstance(rec, RecordError):
            return fail(rec.problem, i, None, rec.detail)
        key = keyring.get(rec.key_id)
        if key is None:
            return fail(Problem.UNKNOWN_KEY, i, rec, f"signed by key {rec.key_id!r}, which is not in the keyring")
        if not key.verify(rec.signature, rec.signed_bytes()):
            return fail(Problem.BAD_SIGNATURE, i, rec, f"the signature does not match the content (key {rec.key_id})")
        inconsistent = _check_totals(rec.body)
        if inconsistent:
            return fail(Problem.MALFORMED, i, rec, inconsistent)

        st = chains.get(rec.project)
        if st is None:
            st = chains[rec.project] = _ChainState()
            a = anchors.get(rec.project)
            if a is not None:
                st.expected_seq, st.prev_hash, st.prev_end = a.seq + 1, a.hash, to_epoch(a.end)
        if rec.seq < st.expected_seq:
            if rec.seq in st.seen:
                h, j = st.seen[rec.seq]
                if h == rec.hash:
                    return fail(Problem.DUPLICATE, i, rec, f"the same record as #{j}")
                return fail(Problem.DUPLICATE, i, rec, f"a second, different record with seq {rec.seq} (first at #{j})")
            return fail(Problem.DUPLICATE, i, rec, f"seq {rec.seq} is at or before the anchor (seq "
                        f"{st.expected_seq - 1})")
        if rec.seq > st.expected_seq:
            later = [j for j in positions.get((rec.project, st.expected_seq), []) if j > i]
            if later:
                return fail(Problem.REORDERED, i, rec, f"seq {rec.seq} comes before seq {st.expected_seq} "
                            f"(which is at #{later[0]})")
            missing = (f"seq {st.expected_seq}" if rec.seq == st.expected_seq + 1
                       else f"seq {st.expected_seq}..{rec.seq - 1}")
            return fail(Problem.GAP, i, rec, f"{missing} missing before this record")
        if rec.prev != st.prev_hash:
            return fail(Problem.BROKEN_CHAIN, i, rec, f"prev is {rec.prev[:16]}…, the previous record hashes to "
                        f"{st.prev_hash[:16]}…")
        start, end = to_epoch(rec.start), to_epoch(rec.end)
        if st.prev_end is not None and start > st.prev_end:
            return fail(Problem.TIME_GAP, i, rec, f"starts at {rec.body['start']}, the previous record ended at "
                        f"{format_time(st.prev_end)}")
        if st.prev_end is not None and start < st.prev_end:
            return fail(Problem.TIME_OVERLAP, i, rec, f"starts at {rec.body['start']}, before the previous record "
                        f"ended ({format_time(st.prev_end)})")
        st.seen[rec.seq] = (rec.hash, i)
        st.expected_seq, st.prev_hash, st.prev_end = rec.seq + 1, rec.hash, end
        heads[rec.project] = ChainHead.of(rec)

    for project, want in sorted((expect_heads or {}).items()):
        st = chains.get(project)
        have = heads.get(project)
        if have is None or have.seq < want.seq:
            got = "no records" if have is None else f"ends at seq {have.seq}"
            f = Finding(Problem.TRUNCATED, len(items), want.record_id, want.seq, project,
                        f"the chain {got}; the published head is seq {want.seq}")
            return Verification(False, len(items), heads, f)
        h, j = st.seen[want.seq] if st and want.seq in st.seen else (None, None)
        if h != want.hash:
            f = Finding(Problem.BROKEN_CHAIN, j if j is not None else len(items), want.record_id, want.seq, project,
                        "this record is not the one in the published head")
            return Verification(False, len(items), heads, f)
    return Verification(True, len(items), heads)


# --------------------------------------------------------------------------- export


def _as_records(records: Iterable[Record | bytes]) -> list[Record]:
    return [r if isinstance(r, Record) else Record.from_bytes(r) for r in records]


def select(
    records: Iterable[Record | bytes],
    *,
    project: str | None = None,
    since: datetime | int | None = None,
    until: datetime | int | None = None,
) -> list[Record]:
    """Records of ``project`` (all if None) whose interval starts in ``[since, until)``."""
    lo = None if since is None else to_epoch(since)
    hi = None if until is None else to_epoch(until)
    out = []
    for r in _as_records(records):
        s = to_epoch(r.start)
        if (project is None or r.project == project) and (lo is None or s >= lo) and (hi is None or s < hi):
            out.append(r)
    return out


_ROW_FIELDS = ("project", "record", "seq", "start", "end", "meter", "quantity")
_DETAIL_FIELDS = ("resource", "kind", "name")


def export_rows(
    records: Iterable[Record | bytes],
    *,
    project: str | None = None,
    since: datetime | int | None = None,
    until: datetime | int | None = None,
    detail: bool = False,
) -> list[dict[str, Any]]:
    """One row per record and meter (``detail``: per record, resource and meter)."""
    rows: list[dict[str, Any]] = []
    for r in select(records, project=project, since=since, until=until):
        base = {"project": r.project, "record": r.id, "seq": r.seq, "start": r.body["start"], "end": r.body["end"]}
        if detail:
            for res in r.resources:
                for meter, q in sorted(res["usage"].items()):
                    rows.append({**base, "meter": meter, "quantity": q, "resource": res["uid"],
                                 "kind": res["kind"], "name": res.get("name", "")})
        else:
            for meter, q in sorted(r.usage.items()):
                rows.append({**base, "meter": meter, "quantity": q})
    return rows


def usage_totals(
    records: Iterable[Record | bytes],
    *,
    project: str | None = None,
    since: datetime | int | None = None,
    until: datetime | int | None = None,
) -> dict[str, dict[str, int]]:
    """Summed usage per project and meter, e.g. to rate with a PriceList."""
    out: dict[str, dict[str, int]] = {}
    for r in select(records, project=project, since=since, until=until):
        t = out.setdefault(r.project, {})
        for meter, q in r.usage.items():
            t[meter] = t.get(meter, 0) + q
    return {p: dict(sorted(m.items())) for p, m in sorted(out.items())}


def export_csv(
    records: Iterable[Record | bytes],
    *,
    project: str | None = None,
    since: datetime | int | None = None,
    until: datetime | int | None = None,
    detail: bool = False,
) -> str:
    """CSV with a header row; columns project, record, seq, start, end, meter, quantity
    (and resource, kind, name with ``detail``)."""
    fields = _ROW_FIELDS + (_DETAIL_FIELDS if detail else ())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(export_rows(records, project=project, since=since, until=until, detail=detail))
    return buf.getvalue()


def export_json(
    records: Iterable[Record | bytes],
    *,
    project: str | None = None,
    since: datetime | int | None = None,
    until: datetime | int | None = None,
    detail: bool = False,
) -> str:
    """``{"since", "until", "rows": [...], "totals": {project: {meter: quantity}}}``."""
    recs = select(records, project=project, since=since, until=until)
    doc = {
        "since": None if since is None else format_time(since),
        "until": None if until is None else format_time(until),
        "rows": export_rows(recs, detail=detail),
        "totals": usage_totals(recs),
    }
    return json.dumps(doc, separators=(",", ":")) + "\n"


# --------------------------------------------------------------------------- the ledger


class RecordStore(Protocol):
    """What the ledger needs from storage (implemented in stratus.drivers.ledger_store)."""

    def put(self, record_id: str, data: bytes) -> bool: ...

    def get(self, record_id: str) -> bytes | None: ...

    def ids(self, project: str) -> list[str]: ...

    def projects(self) -> list[str]: ...

    def last_id(self, project: str) -> str | None: ...


class Ledger:
    """Appends signed records to a store and reads them back. One writer at a time.

    The operator runs one ledger writer (kopf peering or leader election makes sure);
    rotate keys by assigning a new :attr:`signer`.
    """

    def __init__(self, store: RecordStore, signer: Signer, *, detail: bool = True) -> None:
        self.store = store
        self.signer = signer
        self.detail = detail
        self._heads: dict[str, ChainHead | None] = {}

    def head(self, project: str) -> ChainHead | None:
        if project not in self._heads:
            rid = self.store.last_id(project)
            data = None if rid is None else self.store.get(rid)
            self._heads[project] = None if data is None else ChainHead.of(Record.from_bytes(data))
        return self._heads[project]

    def append(self, usage: IntervalUsage) -> Record:
        """Seal ``usage`` after the project's head and store it; idempotent per interval.

        Returns the stored record. If the interval was recorded before with the same
        usage, returns that record and writes nothing; with different usage, raises
        :class:`RecordConflict` (``.existing`` is the stored record).
        """
        rid = record_id(usage.project, usage.start)
        existing = self.store.get(rid)
        if existing is not None:
            rec = Record.from_bytes(existing)
            if rec.matches(usage):
                return rec
            raise RecordConflict(rid, "this interval is already recorded with different usage", rec)
        head = self.head(usage.project)
        rec = seal(usage, head, self.signer, detail=self.detail)
        try:
            self.store.put(rid, rec.data)
        except RecordConflict:
            self._heads.pop(usage.project, None)
            raise
        self._heads[usage.project] = ChainHead.of(rec)
        return rec

    def projects(self) -> list[str]:
        return self.store.projects()

    def records(
        self, project: str, since: datetime | int | None = None, until: datetime | int | None = None
    ) -> list[Record]:
        """The project's records whose interval starts in ``[since, until)``, in order."""
        lo = None if since is None else record_id(project, since)
        hi = None if until is None else record_id(project, until)
        out = []
        for rid in self.store.ids(project):
            if (lo is None or rid >= lo) and (hi is None or rid < hi):
                data = self.store.get(rid)
                if data is not None:
                    out.append(Record.from_bytes(data))
        return out

    def raw(self, project: str) -> list[bytes]:
        """The project's stored bytes in order, unparsed (for :func:`verify`)."""
        out = []
        for rid in self.store.ids(project):
            data = self.store.get(rid)
            if data is not None:
                out.append(data)
        return out

    def verify(
        self,
        keyring: Keyring,
        projects: Sequence[str] | None = None,
        expect_heads: Mapping[str, ChainHead] | None = None,
    ) -> Verification:
        """Verify the stored chains of ``projects`` (all by default).

        A record too damaged to be read is still named, by the id it is stored under.
        """
        ids: list[str] = []
        items: list[bytes] = []
        for p in projects if projects is not None else self.projects():
            for rid in self.store.ids(p):
                data = self.store.get(rid)
                if data is not None:
                    ids.append(rid)
                    items.append(data)
        result = verify(items, keyring, expect_heads=expect_heads)
        f = result.error
        if f is not None and f.record_id is None and f.index < len(ids):
            named = replace(f, record_id=ids[f.index], project=parse_record_id(ids[f.index])[0])
            result = replace(result, error=named)
        return result

    def resume(self, tracker: UsageTracker, projects: Iterable[str] | None = None) -> None:
        """Align the tracker's cursors with the ledger heads at start-up.

        ``projects`` defaults to those the tracker knows; pass the live Project names so
        a project whose tracker state was lost continues its chain without a time gap.
        """
        for p in sorted(set(tracker.projects() if projects is None else projects)):
            head = self.head(p)
            tracker.resume(p, None if head is None else head.end)


@dataclass
class CloseReport:
    """What :func:`close_due` did: records it appended or found, and conflicts it adopted."""

    records: list[Record] = field(default_factory=list)
    adopted: list[RecordConflict] = field(default_factory=list)


def close_due(tracker: UsageTracker, ledger: Ledger, now: datetime | int) -> CloseReport:
    """Close every interval due by ``now`` (pass now minus a grace period), oldest first.

    For each: compute usage, append it to the ledger, then commit it in the tracker;
    persist the tracker state afterwards. A crash anywhere repeats at most the last
    step: the append finds the identical record, or, if late observations changed the
    usage, the stored record stands and the tracker commits what it says (reported in
    ``adopted``). A storage error propagates with the tracker untouched, so the next
    call retries and nothing is lost.
    """
    report = CloseReport()
    for interval in tracker.due(now):
        usage = tracker.usage(*interval)
        try:
            rec = ledger.append(usage)
        except RecordConflict as conflict:
            if conflict.existing is None:
                raise
            rec = conflict.existing
            usage = rec.to_usage()
            report.adopted.append(conflict)
        tracker.commit(usage)
        report.records.append(rec)
    return report
