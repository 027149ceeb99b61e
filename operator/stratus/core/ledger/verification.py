"""Verifying stored chains: signatures, hash links, sequence and time continuity.

Design decisions
================

Verification reports the first bad record.
    :func:`verify` walks records in the order given (the store lists them by time) and
    stops at the first problem: unparsable or non-canonical bytes, an unknown key, a
    bad signature, a duplicate, a record out of order, a missing sequence number, a
    broken hash link, a gap or overlap in time, or a chain shorter than a published head.
    Each finding names the position, record id, sequence and a human message; problems
    are CamelCase words usable as a condition reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from stratus.core.metering import format_time, to_epoch

from .chain import ChainHead
from .records import GENESIS, Problem, Record, RecordError, _check_totals
from .signing import Keyring

__all__ = ["Finding", "Verification", "verify"]


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
