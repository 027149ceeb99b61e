"""Usage accounting: resource-seconds per meter from state transitions, and rating.

This is the pure half of Stratus metering (the Ceilometer counterpart). It has no I/O:
the operator feeds it observations from kopf events, persists its state as JSON, and
hands each closed interval to :mod:`stratus.core.ledger`, which signs and chains it.

Design decisions
================

Observations are transitions, not samples.
    ``UsageTracker.observe(project, uid, kind, meters, running, at)`` says "from ``at``
    on, this resource holds these quantities and is (not) running". The state holds
    until the next observation of the same resource, so usage is the integral of a step
    function: a server created at 10:00:00 and deleted at 10:10:00 is billed 600
    vcpu-seconds per vCPU, whatever the sampling rate. Periodic measurements (a bucket's
    size from a scrape) are fed the same way: each is a transition to the new size.

Time is whole seconds.
    Timestamps must be timezone-aware; they are converted to integer seconds since the
    Unix epoch, truncating sub-second parts (Kubernetes timestamps have none). Since
    every duration is a difference of truncated instants and interval boundaries are
    whole seconds, splitting is exact: usage over [a, b) plus usage over [b, c) equals
    usage over [a, c), to the unit.

Integers only.
    A quantity is a non-negative ``int`` (vCPUs, bytes, nodes); usage is quantity times
    seconds, an ``int`` of arbitrary size (a 1 TiB volume for an hour is already near
    2**52, so consumers must not squeeze these into doubles).

Meters and the running flag.
    Each meter is declared in a catalogue (:data:`DEFAULT_METERS`) with
    ``while_running``: vcpu-seconds and memory-byte-seconds accrue only while the
    resource runs; volume, snapshot, image and bucket byte-seconds accrue while the
    resource exists, so a stopped server that reports its root disk as
    ``volume-byte-seconds`` keeps paying for the disk and nothing else. A bare-metal
    node accrues ``baremetal-node-seconds`` while it is allocated to the project, powered
    or not: the hardware is reserved either way. A meter name may carry a qualifier
    after a slash (``volume-byte-seconds/ssd``); accrual follows the base meter and the
    price list may price the qualified name separately.

Intervals, the cursor and idempotent closing.
    Each project has a cursor: the end of its last closed interval (initially the
    interval boundary at or before its first observation). ``due(now)`` lists the
    intervals (aligned to multiples of ``interval`` seconds since the epoch, i.e. whole
    UTC hours by default) that ended by ``now``. Closing is two-phase so a crash between
    writing the ledger and saving this state loses nothing and duplicates nothing:
    ``usage(project, start, end)`` computes without changing state, the caller appends
    the record, then ``commit(usage)`` advances the cursor. ``close()`` does both.
    Asking again for the last closed interval returns the identical result (it is kept);
    asking for anything else that starts before the cursor raises
    :class:`IntervalError`. After a restart, ``resume(project, recorded_until)``
    aligns the cursor with the ledger's head, the ledger being the authority on what
    was recorded.

While the operator was down.
    The last known state keeps accruing until the next observation. A running server
    whose VM stopped during the outage is billed as running until the operator, on
    restart, observes it (ideally with the real transition time from the object's
    status, which lands exactly if its interval is not closed yet). This errs towards
    billing what was last known to be allocated, rather than dropping usage that cannot
    be proven absent; the alternative (stop accruing at the last heartbeat) would make an
    operator outage free compute.

Late observations.
    An observation older than the latest one of its resource is inserted in order, so
    reordered events are exact as long as their interval is open. The closed past is
    never rewritten: an observation before the cursor only affects usage from the
    cursor on (if it is the newest thing known about the state at the cursor).
    Deleted resources leave a tombstone for ``tombstone_intervals`` intervals so a stale
    event cannot bring them back to life.

Rating.
    :class:`PriceList` turns usage totals into cost in integer minor currency units
    (cents), like CloudKitty's hashmap rating on flat per-unit rates. Rate the summed
    usage of the billing period, not each hourly record, so rounding (half up) happens
    once per meter.
"""

from __future__ import annotations

import bisect
import enum
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_METERS",
    "Cost",
    "Interval",
    "IntervalError",
    "IntervalUsage",
    "Meter",
    "PriceList",
    "Rate",
    "ResourceUsage",
    "UsageTracker",
    "TickStep",
    "format_time",
    "from_epoch",
    "observation_time",
    "parse_kube_time",
    "parse_time",
    "tick_step",
    "to_epoch",
    "vanished",
]

DEFAULT_INTERVAL = 3600
STATE_FORMAT = "stratus.dev/metering-state/v1"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z
_TIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$")
_METER_RE = re.compile(r"^(?P<base>[a-z][a-z0-9-]*)(?:/(?P<qualifier>[A-Za-z0-9._-]+))?$")


# --------------------------------------------------------------------------- time


def to_epoch(at: datetime | int) -> int:
    """Whole seconds since the Unix epoch; sub-second parts are truncated.

    Accepts an aware ``datetime`` (naive ones are refused: guessing a zone would move
    usage between intervals) or an ``int`` already in epoch seconds.
    """
    if isinstance(at, bool):
        raise TypeError("a time must be an aware datetime or int epoch seconds, not bool")
    if isinstance(at, int):
        seconds = at
    elif isinstance(at, datetime):
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"naive datetime {at!r}: pass a timezone-aware time")
        seconds = (at - _EPOCH) // _SECOND
    else:
        raise TypeError(f"a time must be an aware datetime or int epoch seconds, not {type(at).__name__}")
    if not 0 <= seconds <= _MAX_EPOCH:
        raise ValueError(f"time {at!r} is outside 1970..9999")
    return seconds


def from_epoch(seconds: int) -> datetime:
    """The aware UTC datetime for whole epoch seconds."""
    return _EPOCH + timedelta(seconds=seconds)


def format_time(at: datetime | int) -> str:
    """RFC 3339 in UTC, whole seconds, ``Z`` suffix: ``2025-01-31T23:00:00Z``."""
    d = from_epoch(to_epoch(at))
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}Z"


def parse_time(text: str) -> datetime:
    """Parse exactly the form :func:`format_time` writes (nothing laxer)."""
    m = _TIME_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"not a UTC time of the form YYYY-MM-DDTHH:MM:SSZ: {text!r}")
    return datetime(*(int(g) for g in m.groups()), tzinfo=UTC)


# --------------------------------------------------------------------------- meters


@dataclass(frozen=True)
class Meter:
    """A metered quantity. Usage is ``quantity * seconds`` under ``name``.

    ``unit`` names what an observed quantity counts (``vcpu``, ``byte``, ``node``);
    ``while_running`` says whether it accrues only while the resource runs.
    """

    name: str
    unit: str
    while_running: bool
    description: str = ""

    def __post_init__(self) -> None:
        m = _METER_RE.match(self.name)
        if not m or m.group("qualifier"):
            raise ValueError(f"invalid meter name {self.name!r}: lowercase words joined by '-'")


DEFAULT_METERS: tuple[Meter, ...] = (
    Meter("vcpu-seconds", "vcpu", True, "virtual CPUs of a running server"),
    Meter("memory-byte-seconds", "byte", True, "memory of a running server"),
    Meter("volume-byte-seconds", "byte", False, "provisioned size of a volume, attached or not"),
    Meter("snapshot-byte-seconds", "byte", False, "size of a volume snapshot"),
    Meter("image-byte-seconds", "byte", False, "stored size of an image"),
    Meter("bucket-byte-seconds", "byte", False, "bytes stored in a bucket"),
    Meter("baremetal-node-seconds", "node", False, "a bare-metal node allocated to the project"),
    Meter("database-instance-seconds", "instance", True, "ready instances of a database (qualified by flavor)"),
    Meter("database-storage-byte-seconds", "byte", False, "storage of every instance of a database"),
    Meter("data-node-seconds", "node", True, "nodes of a data-processing cluster that are up (qualified by flavor)"),
    Meter("data-job-seconds", "job", True, "a data-processing job while it runs"),
)


def _base_meter(name: str) -> str:
    m = _METER_RE.match(name) if isinstance(name, str) else None
    if not m:
        raise ValueError(f"invalid meter name {name!r}")
    return m.group("base")


# --------------------------------------------------------------------------- results


class IntervalError(ValueError):
    """An interval that cannot be closed: already closed, not contiguous, or empty."""


class Interval(NamedTuple):
    """A project's interval ``[start, end)`` due for closing."""

    project: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class ResourceUsage:
    """Usage of one resource in one interval; only meters with non-zero usage appear."""

    uid: str
    kind: str
    usage: dict[str, int]
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"uid": self.uid, "kind": self.kind, "usage": dict(self.usage)}
        if self.name is not None:
            d["name"] = self.name
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ResourceUsage:
        return cls(uid=d["uid"], kind=d["kind"], usage=dict(d["usage"]), name=d.get("name"))


@dataclass(frozen=True)
class IntervalUsage:
    """What a closed interval of a project used: totals and a line per resource.

    ``totals`` is the sum of the resource lines; resources are sorted by uid and only
    those with some non-zero usage appear. An interval with no usage is still a result
    (the ledger records it, so gaps in time are visible).
    """

    project: str
    start: datetime
    end: datetime
    totals: dict[str, int]
    resources: tuple[ResourceUsage, ...] = ()

    @property
    def seconds(self) -> int:
        return to_epoch(self.end) - to_epoch(self.start)

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "start": to_epoch(self.start),
            "end": to_epoch(self.end),
            "totals": dict(self.totals),
            "resources": [r.to_dict() for r in self.resources],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IntervalUsage:
        return cls(
            project=d["project"],
            start=from_epoch(d["start"]),
            end=from_epoch(d["end"]),
            totals=dict(d["totals"]),
            resources=tuple(ResourceUsage.from_dict(r) for r in d["resources"]),
        )


# --------------------------------------------------------------------------- tracker


@dataclass
class _Point:
    """From ``at`` on, the resource is in this state; ``meters is None`` means deleted."""

    at: int
    running: bool
    meters: dict[str, int] | None

    def same_state(self, other: _Point) -> bool:
        return self.running == other.running and self.meters == other.meters

    def to_json(self) -> list[Any]:
        return [self.at, self.running, self.meters]

    @classmethod
    def from_json(cls, v: list[Any]) -> _Point:
        at, running, meters = v
        return cls(int(at), bool(running), None if meters is None else {k: int(q) for k, q in meters.items()})


@dataclass
class _Resource:
    kind: str | None  # None until observed (a deletion may arrive first)
    name: str | None
    points: list[_Point] = field(default_factory=list)  # sorted by ``at``, unique ``at``


@dataclass
class _Project:
    cursor: int
    last: IntervalUsage | None = None
    resources: dict[str, _Resource] = field(default_factory=dict)
    tombstones: dict[str, int] = field(default_factory=dict)


class UsageTracker:
    """Accumulates state transitions per project and resource; closes intervals.

    Serialisable with :meth:`to_dict`/:meth:`from_dict` (or :meth:`dumps`/:meth:`loads`)
    so the operator can persist it after each change and resume after a restart.
    Not thread-safe: call it from one task (kopf handlers run on one event loop).
    """

    def __init__(
        self,
        interval: int = DEFAULT_INTERVAL,
        meters: Iterable[Meter] = DEFAULT_METERS,
        *,
        tombstone_intervals: int = 24,
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0:
            raise ValueError("interval must be a positive number of seconds")
        self.interval = interval
        self.tombstone_intervals = tombstone_intervals
        self.meters: dict[str, Meter] = {}
        for m in meters:
            if m.name in self.meters:
                raise ValueError(f"meter {m.name!r} declared twice")
            self.meters[m.name] = m
        self._projects: dict[str, _Project] = {}

    # ------------------------------------------------------------------ queries

    def projects(self) -> list[str]:
        return sorted(self._projects)

    def cursor(self, project: str) -> datetime | None:
        """The end of the project's last closed interval (where the next one starts)."""
        p = self._projects.get(project)
        return None if p is None else from_epoch(p.cursor)

    def resources(self, project: str) -> dict[str, str]:
        """Live (not deleted) resources by uid, with their kind, as last observed.

        After a restart the operator compares this with what exists in the cluster and
        calls :meth:`remove` for what vanished while it was down.
        """
        p = self._projects.get(project)
        if p is None:
            return {}
        return {uid: r.kind for uid, r in sorted(p.resources.items()) if r.points and r.points[-1].meters is not None}

    def due(self, now: datetime | int) -> list[Interval]:
        """Every interval of every project that ended at or before ``now``, oldest first.

        Intervals end on multiples of ``interval`` epoch seconds; after an operator
        outage this lists each missed interval, so none is skipped or merged.
        """
        t = to_epoch(now)
        out: list[Interval] = []
        for name in sorted(self._projects):
            start = self._projects[name].cursor
            end = (start // self.interval + 1) * self.interval
            while end <= t:
                out.append(Interval(name, from_epoch(start), from_epoch(end)))
                start, end = end, end + self.interval
        out.sort(key=lambda i: (i.end, i.project))
        return out

    # ------------------------------------------------------------------ observations

    def observe(
        self,
        project: str,
        resource_uid: str,
        kind: str,
        meters: Mapping[str, int],
        running: bool,
        at: datetime | int,
        *,
        name: str | None = None,
    ) -> bool:
        """Record that from ``at`` on the resource holds ``meters`` and is (not) running.

        ``meters`` maps meter names to quantities (``{"vcpu-seconds": 2,
        "memory-byte-seconds": 4 << 30, "volume-byte-seconds": 20 << 30}``): usage is the
        quantity per second. An observation older than the newest one is inserted in
        time order; one at the same instant as an earlier observation replaces it.
        Returns whether usage from the cursor on changed: a repeat of the newest state
        returns False (it is still kept, as evidence for reordered events, but a caller
        may skip persisting the state for it).
        """
        _check_name("project", project)
        _check_name("resource_uid", resource_uid)
        _check_name("kind", kind)
        clean: dict[str, int] = {}
        for meter, qty in meters.items():
            base = _base_meter(meter)
            if base not in self.meters:
                raise ValueError(f"unknown meter {meter!r}; known: {', '.join(sorted(self.meters))}")
            if isinstance(qty, bool) or not isinstance(qty, int) or qty < 0:
                raise ValueError(f"quantity of {meter!r} must be a non-negative int, got {qty!r}")
            if qty:
                clean[meter] = qty
        return self._insert(project, resource_uid, kind, name, _Point(to_epoch(at), bool(running), clean))

    def remove(self, project: str, resource_uid: str, at: datetime | int) -> bool:
        """Record that the resource was deleted at ``at``; it accrues nothing after.

        A deletion of a resource never observed is remembered too (within a known
        project), so a creation event that arrives after it is bounded by it.
        """
        p = self._projects.get(project)
        if p is None:
            return False
        r = p.resources.get(resource_uid)
        return self._insert(project, resource_uid, r.kind if r else None, r.name if r else None,
                            _Point(to_epoch(at), False, None))

    def _insert(self, project: str, uid: str, kind: str | None, name: str | None, point: _Point) -> bool:
        p = self._projects.get(project)
        if p is None:
            p = self._projects[project] = _Project(cursor=point.at // self.interval * self.interval)
        if uid in p.tombstones and point.at <= p.tombstones[uid]:
            return False  # a stale event about a resource already deleted and closed
        r = p.resources.get(uid)
        if r is None:
            r = p.resources[uid] = _Resource(kind=kind, name=name)
        elif kind is not None and r.kind is None:
            r.kind = kind
        elif kind is not None and r.kind != kind:
            raise ValueError(f"resource {uid} was observed as {r.kind}, now as {kind}")
        renamed = name is not None and name != r.name
        if renamed:
            r.name = name
        before = _timeline(r, p.cursor)
        # Every observation is kept, even one repeating the newest state: should an
        # older event arrive later, the repeat marks when that state held again.
        i = bisect.bisect_left([pt.at for pt in r.points], point.at)
        if i < len(r.points) and r.points[i].at == point.at:
            r.points[i] = point
        else:
            r.points.insert(i, point)
        self._compact(p, uid, p.cursor)
        after = _timeline(p.resources[uid], p.cursor) if uid in p.resources else []
        return renamed or before != after

    # ------------------------------------------------------------------ closing

    def usage(self, project: str, start: datetime | int, end: datetime | int) -> IntervalUsage:
        """Usage of ``project`` over ``[start, end)``, without changing any state.

        ``start`` must be the project's cursor, except that the last closed interval may
        be asked again and yields the identical result.
        """
        s, e = to_epoch(start), to_epoch(end)
        if e <= s:
            raise IntervalError(f"empty interval {format_time(s)}..{format_time(e)}")
        p = self._projects.get(project)
        if p is not None:
            if p.last is not None and (to_epoch(p.last.start), to_epoch(p.last.end)) == (s, e):
                return p.last
            if s != p.cursor:
                raise IntervalError(
                    f"project {project}: next interval starts at {format_time(p.cursor)}, not {format_time(s)}"
                    + (" (already closed)" if s < p.cursor else " (that would skip usage)")
                )
        lines: list[ResourceUsage] = []
        totals: dict[str, int] = {}
        for uid, r in sorted((p.resources if p else {}).items()):
            acc = self._integrate(r, s, e)
            if acc:
                lines.append(ResourceUsage(uid=uid, kind=r.kind or "", usage=acc, name=r.name))
                for meter, v in acc.items():
                    totals[meter] = totals.get(meter, 0) + v
        return IntervalUsage(
            project=project,
            start=from_epoch(s),
            end=from_epoch(e),
            totals=dict(sorted(totals.items())),
            resources=tuple(lines),
        )

    def _integrate(self, r: _Resource, s: int, e: int) -> dict[str, int]:
        acc: dict[str, int] = {}
        pts = r.points
        for i, pt in enumerate(pts):
            seg_start = max(pt.at, s)
            seg_end = min(pts[i + 1].at, e) if i + 1 < len(pts) else e
            seconds = seg_end - seg_start
            if seconds <= 0 or pt.meters is None:
                continue
            for meter, qty in pt.meters.items():
                if self.meters[_base_meter(meter)].while_running and not pt.running:
                    continue
                acc[meter] = acc.get(meter, 0) + qty * seconds
        return {k: v for k, v in sorted(acc.items()) if v}

    def commit(self, usage: IntervalUsage) -> None:
        """Mark ``usage``'s interval closed (after the ledger accepted its record).

        Committing the last closed interval again is a no-op.
        """
        s, e = to_epoch(usage.start), to_epoch(usage.end)
        p = self._projects.get(usage.project)
        if p is None:
            p = self._projects[usage.project] = _Project(cursor=s)
        if p.last is not None and (to_epoch(p.last.start), to_epoch(p.last.end)) == (s, e):
            return
        if s != p.cursor:
            raise IntervalError(
                f"project {usage.project}: cannot commit {format_time(s)}..{format_time(e)}, "
                f"the cursor is {format_time(p.cursor)}"
            )
        p.cursor, p.last = e, usage
        for uid in list(p.resources):
            self._compact(p, uid, e)
        horizon = e - self.tombstone_intervals * self.interval
        p.tombstones = {u: t for u, t in p.tombstones.items() if t > horizon}

    def close(self, project: str, start: datetime | int, end: datetime | int) -> IntervalUsage:
        """Compute and commit ``[start, end)`` in one step; idempotent for the last one."""
        result = self.usage(project, start, end)
        self.commit(result)
        return result

    def resume(self, project: str, recorded_until: datetime | int | None) -> None:
        """Align the project's cursor with the ledger, which recorded up to ``recorded_until``.

        Call at start-up with each project's ledger head. If this state is older than the
        ledger (a crash after writing the record, before saving the state), usage up to
        ``recorded_until`` is dropped as already recorded. If the project has no closed
        interval yet in this state (the state was lost), the cursor moves back so the
        chain stays contiguous; the lost time accrues nothing. ``None`` (nothing
        recorded) changes nothing.
        """
        if recorded_until is None:
            return
        t = to_epoch(recorded_until)
        p = self._projects.get(project)
        if p is None:
            self._projects[project] = _Project(cursor=t)
            return
        if t > p.cursor:
            p.cursor, p.last = t, None
            for uid in list(p.resources):
                self._compact(p, uid, t)
        elif t < p.cursor:
            if p.last is not None:
                raise IntervalError(
                    f"project {project}: the ledger ends at {format_time(t)} but this state closed "
                    f"up to {format_time(p.cursor)}: a closed interval was never recorded"
                )
            p.cursor = t

    def forget(self, project: str) -> None:
        """Drop a deleted project after its final interval has been recorded."""
        self._projects.pop(project, None)

    def _compact(self, p: _Project, uid: str, upto: int) -> None:
        """Drop points that cannot affect usage from ``upto`` on; prune dead resources."""
        r = p.resources[uid]
        keep_from = 0
        for i, pt in enumerate(r.points):
            if pt.at <= upto:
                keep_from = i
        if keep_from:
            del r.points[:keep_from]
        if len(r.points) == 1 and r.points[0].meters is None and r.points[0].at <= upto:
            p.tombstones[uid] = r.points[0].at
            del p.resources[uid]

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "interval": self.interval,
            "projects": {
                name: {
                    "cursor": p.cursor,
                    "last": None if p.last is None else p.last.to_dict(),
                    "resources": {
                        uid: {"kind": r.kind, "name": r.name, "points": [pt.to_json() for pt in r.points]}
                        for uid, r in sorted(p.resources.items())
                    },
                    "tombstones": dict(sorted(p.tombstones.items())),
                }
                for name, p in sorted(self._projects.items())
            },
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], meters: Iterable[Meter] = DEFAULT_METERS, **kwargs: Any
    ) -> UsageTracker:
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"not a metering state: format {data.get('format')!r}")
        t = cls(interval=int(data["interval"]), meters=meters, **kwargs)
        for name, pd in data["projects"].items():
            p = _Project(
                cursor=int(pd["cursor"]),
                last=None if pd["last"] is None else IntervalUsage.from_dict(pd["last"]),
                tombstones={u: int(v) for u, v in pd.get("tombstones", {}).items()},
            )
            for uid, rd in pd["resources"].items():
                points = [_Point.from_json(v) for v in rd["points"]]
                for pt in points:
                    for meter in pt.meters or {}:
                        if _base_meter(meter) not in t.meters:
                            raise ValueError(f"state uses meter {meter!r}, not in this catalogue")
                p.resources[uid] = _Resource(kind=rd["kind"], name=rd.get("name"), points=points)
            t._projects[name] = p
        return t

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | bytes, meters: Iterable[Meter] = DEFAULT_METERS, **kwargs: Any) -> UsageTracker:
        return cls.from_dict(json.loads(text), meters=meters, **kwargs)


def _timeline(r: _Resource, cursor: int) -> list[tuple[int, bool, dict[str, int] | None]]:
    """The resource's states from the cursor on, repeats merged: what usage depends on."""
    out: list[tuple[int, bool, dict[str, int] | None]] = []
    for pt in r.points:
        t = max(pt.at, cursor)
        if out and out[-1][0] == t:
            out.pop()
        if out and out[-1][1:] == (pt.running, pt.meters) or not out and pt.meters is None:
            continue
        out.append((t, pt.running, pt.meters))
    return out


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")


# --------------------------------------------------------------------------- rating


@dataclass(frozen=True)
class Rate:
    """``amount`` minor currency units (e.g. cents) per ``per`` units of usage.

    ``Rate(amount=5, per=3600)`` on ``vcpu-seconds`` is 5 cents per vCPU-hour.
    """

    amount: int
    per: int = 1

    def __post_init__(self) -> None:
        for n in ("amount", "per"):
            v = getattr(self, n)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"rate {n} must be an int, got {v!r}")
        if self.amount < 0 or self.per <= 0:
            raise ValueError("rate amount must be >= 0 and per > 0")

    def cost(self, quantity: int) -> int:
        """Cost of ``quantity`` units, rounded half up to a whole minor unit."""
        return (2 * quantity * self.amount + self.per) // (2 * self.per)


@dataclass(frozen=True)
class Cost:
    currency: str
    lines: dict[str, int]
    total: int
    unpriced: tuple[str, ...] = ()


@dataclass(frozen=True)
class PriceList:
    """Flat per-meter rates, looked up by the exact meter name, then by its base meter.

    ``PriceList.from_dict({"currency": "EUR", "rates": {"vcpu-seconds": {"amount": 5,
    "per": 3600}}})`` reads the shape a ConfigMap would hold. Meters without a rate are
    free and listed in :attr:`Cost.unpriced`.
    """

    currency: str
    rates: dict[str, Rate]

    def rate_for(self, meter: str) -> Rate | None:
        return self.rates.get(meter) or self.rates.get(_base_meter(meter))

    def rate(self, totals: Mapping[str, int]) -> Cost:
        lines: dict[str, int] = {}
        unpriced: list[str] = []
        for meter, qty in sorted(totals.items()):
            r = self.rate_for(meter)
            if r is None:
                unpriced.append(meter)
            else:
                lines[meter] = r.cost(qty)
        return Cost(self.currency, lines, sum(lines.values()), tuple(unpriced))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PriceList:
        rates = {}
        for meter, r in d.get("rates", {}).items():
            _base_meter(meter)
            rates[meter] = Rate(amount=r["amount"], per=r.get("per", 1))
        currency = d.get("currency")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
            raise ValueError(f"currency must be an ISO 4217 code like EUR, got {currency!r}")
        return cls(currency=currency, rates=rates)


# --------------------------------------------------------------------------- the closer's decisions
#
# The metering loop (stratus.loops.metering_closer) feeds the tracker from watch events and
# closes intervals on a timer; what it decides is here, so it is table-tested.


def parse_kube_time(text: str | None) -> datetime | None:
    """A Kubernetes timestamp, leniently (None for none or garbage; naive means UTC)."""
    if not text:
        return None
    try:
        t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def observation_time(*, new: bool, running_changed: bool, transition: datetime | None, created: datetime | None,
                     now: datetime, floor: datetime | None = None) -> datetime:
    """When a change of an object's usage took effect, by the object's own timestamps.

    A newly seen object counts from its last transition, else its creation; a change of
    running state from its transition; a change of quantity alone (no recorded instant)
    from ``now``. Never later than ``now``; never before ``floor`` (given for a project new
    to the tracker: a first deployment does not bill the years before it).
    """
    if new:
        at = transition or created or now
    elif running_changed:
        at = transition or now
    else:
        at = now
    at = min(at, now)
    return max(at, floor) if floor is not None else at


def vanished(tracked: Mapping[str, Mapping[str, str]], live: Mapping[str, set[str]],
             indexed: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, str, str]]:
    """(project, uid, kind) of tracked resources that no longer exist.

    ``tracked`` is project -> uid -> kind (the tracker's live resources); ``live`` kind ->
    the uids a listing found, for the kinds that could be listed (a kind that is not
    installed is absent, so nothing of it is judged gone); ``indexed`` uids the event
    index still holds (an event not yet processed).
    """
    out = []
    for project in sorted(tracked):
        for uid, kind in tracked[project].items():
            if kind in live and uid not in live[kind] and uid not in indexed:
                out.append((project, uid, kind))
    return out


class TickStep(enum.Enum):
    OPEN = "open"    # the ledger is not open yet: try now
    IDLE = "idle"    # nothing to do this tick
    SAVE = "save"    # nothing due, but changes wait to be saved
    CLOSE = "close"  # intervals are due: resync, refresh keys, close


def tick_step(*, ledger_open: bool, ledger_off: bool, now: float, next_open: float, due: bool,
              dirty_since: float | None, monotonic: float, save_delay: float) -> TickStep:
    """What one tick of the closer does (``due``: the tracker has intervals to close)."""
    if not ledger_open:
        return TickStep.OPEN if not ledger_off and now >= next_open else TickStep.IDLE
    if due:
        return TickStep.CLOSE
    if dirty_since is not None and monotonic - dirty_since >= save_delay:
        return TickStep.SAVE
    return TickStep.IDLE
