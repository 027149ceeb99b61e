"""The ledger itself: appends sealed records to a record store and reads them back.

The store is :mod:`stratus.drivers.ledger_store` (a directory or an S3 bucket); this
module does no I/O of its own. :func:`close_due` is the metering timer's one call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from stratus.core.metering import IntervalUsage, UsageTracker

from .chain import ChainHead, seal
from .records import Record, RecordConflict, parse_record_id, record_id
from .signing import Keyring, Signer
from .verification import Verification, verify

__all__ = ["CloseReport", "Ledger", "RecordStore", "close_due"]


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
