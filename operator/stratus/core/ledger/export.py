"""Ledger export: records selected by time as rows, totals, CSV or JSON (for billing).

Rating the totals in money is :class:`stratus.core.metering.PriceList`'s job.

Design decisions
================

Export selects records by start time.
    ``export_*(records, since=, until=)`` takes records whose interval starts in
    ``[since, until)``, so consecutive exports (month after month) partition the ledger:
    no record is counted twice or dropped. Verify before exporting.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from stratus.core.metering import format_time, to_epoch

from .records import Record

__all__ = ["export_csv", "export_json", "export_rows", "select", "usage_totals"]


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
