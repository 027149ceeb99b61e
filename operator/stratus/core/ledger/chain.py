"""One hash chain per project: the chain head and sealing a closed interval onto it.

Design decisions
================

One chain per project.
    Projects are metered and exported independently, so each has its own chain; the
    writer needs no global lock and deleting a project's history is detectable from its
    own chain. A chain's tail can only be proven complete against a published head
    (:class:`ChainHead`, e.g. in the Project's status or a metric), which
    ``verify(..., expect_heads=...)`` checks; records are written for every interval,
    usage or not, so a missing hour is a gap, not silence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stratus.core.metering import IntervalUsage, format_time, parse_time, to_epoch

from .canonical import _b64u, _dumps, canonical_json
from .records import GENESIS, RECORD_VERSION, Record, _check_totals, _check_usage_map, _payload, record_id
from .signing import Signer

__all__ = ["ChainError", "ChainHead", "seal"]


class ChainError(ValueError):
    """A record that would not continue its chain (wrong project, gap or overlap)."""


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
