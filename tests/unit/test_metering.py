"""Usage accounting: state transitions to integer resource-seconds, per interval."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from stratus.core.metering import (
    DEFAULT_METERS,
    IntervalError,
    Meter,
    PriceList,
    Rate,
    UsageTracker,
    format_time,
    parse_time,
    to_epoch,
)

T0 = datetime(2025, 3, 1, 0, 0, 0, tzinfo=UTC)
GiB = 1 << 30
SERVER = {"vcpu-seconds": 2, "memory-byte-seconds": 4 * GiB, "volume-byte-seconds": 20 * GiB}


def at(minutes: float = 0, hours: int = 0) -> datetime:
    return T0 + timedelta(hours=hours, minutes=minutes)


def play(tracker: UsageTracker, events: list[tuple]) -> None:
    """Events: ("up", uid, minute, meters, running) or ("del", uid, minute)."""
    for ev in events:
        if ev[0] == "up":
            _, uid, minute, meters, running = ev
            tracker.observe("demo", uid, "Server", meters, running, at(minute))
        else:
            _, uid, minute = ev
            tracker.remove("demo", uid, at(minute))


# --------------------------------------------------------------------------- scenarios

SCENARIOS = [
    pytest.param(
        [("up", "s1", 10, {"vcpu-seconds": 1}, True), ("del", "s1", 20)],
        [{"vcpu-seconds": 600}],
        id="ten-minutes-of-life-is-600-seconds",
    ),
    pytest.param(
        [("up", "s1", 0, SERVER, True), ("up", "s1", 15, SERVER, False), ("up", "s1", 45, SERVER, True),
         ("del", "s1", 60)],
        [{"vcpu-seconds": 2 * 1800, "memory-byte-seconds": 4 * GiB * 1800, "volume-byte-seconds": 20 * GiB * 3600}],
        id="stop-start-stops-cpu-and-memory-not-volume",
    ),
    pytest.param(
        [("up", "s1", 30, {"vcpu-seconds": 4}, True), ("del", "s1", 90)],
        [{"vcpu-seconds": 4 * 1800}, {"vcpu-seconds": 4 * 1800}],
        id="usage-spanning-a-boundary-is-split-exactly",
    ),
    pytest.param(
        [("up", "s1", 59, {"vcpu-seconds": 1}, True), ("up", "s1", 61, {"vcpu-seconds": 1}, False),
         ("up", "s1", 119, {"vcpu-seconds": 1}, True), ("up", "s1", 121, {"vcpu-seconds": 1}, False)],
        [{"vcpu-seconds": 60}, {"vcpu-seconds": 120}, {"vcpu-seconds": 60}],
        id="stop-start-across-boundaries-billed-to-the-second",
    ),
    pytest.param(
        [("up", "s1", 0, {"vcpu-seconds": 2}, True), ("up", "s1", 30, {"vcpu-seconds": 8}, True)],
        [{"vcpu-seconds": 2 * 1800 + 8 * 1800}],
        id="resize-changes-the-rate-at-the-transition",
    ),
    pytest.param(
        [("up", "s1", 0, {"vcpu-seconds": 1}, False), ("del", "s1", 60)],
        [{}],
        id="never-started-server-accrues-nothing",
    ),
    pytest.param(
        [("up", "v1", 0, {"volume-byte-seconds": 10}, False)],
        [{"volume-byte-seconds": 36000}, {"volume-byte-seconds": 36000}, {"volume-byte-seconds": 36000}],
        id="a-volume-accrues-while-it-exists",
    ),
    pytest.param(
        [("up", "b1", 0, {"bucket-byte-seconds": 100}, False), ("up", "b1", 20, {"bucket-byte-seconds": 400}, False),
         ("up", "b1", 40, {"bucket-byte-seconds": 0}, False)],
        [{"bucket-byte-seconds": 100 * 1200 + 400 * 1200}],
        id="bucket-size-samples-are-transitions",
    ),
    pytest.param(
        [("up", "n1", 0, {"baremetal-node-seconds": 1}, True), ("up", "n1", 30, {"baremetal-node-seconds": 1}, False),
         ("del", "n1", 45)],
        [{"baremetal-node-seconds": 2700}],
        id="baremetal-node-billed-while-allocated-powered-or-not",
    ),
    pytest.param(
        [("up", "v1", 0, {"volume-byte-seconds/ssd": 3, "volume-byte-seconds": 1}, False)],
        [{"volume-byte-seconds": 3600, "volume-byte-seconds/ssd": 3 * 3600}],
        id="qualified-meters-are-kept-apart",
    ),
    pytest.param(
        [("up", "s1", 0, {"vcpu-seconds": 1}, True), ("up", "s2", 30, {"vcpu-seconds": 2}, True),
         ("del", "s1", 90)],
        [{"vcpu-seconds": 3600 + 2 * 1800}, {"vcpu-seconds": 1800 + 2 * 3600}],
        id="two-servers-add-up",
    ),
]


@pytest.mark.parametrize(("events", "expected"), SCENARIOS)
def test_usage_per_interval(events: list[tuple], expected: list[dict[str, int]]) -> None:
    tracker = UsageTracker()
    play(tracker, events)
    got = [tracker.close("demo", at(hours=h), at(hours=h + 1)).totals for h in range(len(expected))]
    assert got == expected


def test_resource_lines_sum_to_totals_and_name_the_resource() -> None:
    t = UsageTracker()
    t.observe("demo", "u-a", "Server", {"vcpu-seconds": 1}, True, at(0), name="web")
    t.observe("demo", "u-b", "Volume", {"volume-byte-seconds": 5}, False, at(30), name="data")
    u = t.close("demo", at(0), at(60))
    assert [(r.uid, r.kind, r.name, r.usage) for r in u.resources] == [
        ("u-a", "Server", "web", {"vcpu-seconds": 3600}),
        ("u-b", "Volume", "data", {"volume-byte-seconds": 9000}),
    ]
    assert u.totals == {"vcpu-seconds": 3600, "volume-byte-seconds": 9000}
    assert u.seconds == 3600


def test_sub_second_parts_are_truncated_so_splitting_stays_exact() -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(10) + timedelta(microseconds=999_999))
    t.remove("demo", "s", at(20) + timedelta(microseconds=1))
    assert t.close("demo", at(0), at(60)).totals == {"vcpu-seconds": 600}


def test_other_time_zones_are_converted() -> None:
    t = UsageTracker()
    cet = timezone(timedelta(hours=1))
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, datetime(2025, 3, 1, 1, 30, tzinfo=cet))
    assert t.close("demo", at(0), at(60)).totals == {"vcpu-seconds": 1800}


def test_long_life_split_into_many_intervals_sums_to_the_whole() -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 3}, True, at(17))
    t.remove("demo", "s", at(hours=50, minutes=43))
    total = sum(t.close("demo", at(hours=h), at(hours=h + 1)).totals.get("vcpu-seconds", 0) for h in range(52))
    assert total == 3 * (to_epoch(at(hours=50, minutes=43)) - to_epoch(at(17)))


# --------------------------------------------------------------------------- validation

BAD_OBSERVATIONS = [
    pytest.param({"vcpu-seconds": 1.5}, at(0), ValueError, id="float-quantity"),
    pytest.param({"vcpu-seconds": -1}, at(0), ValueError, id="negative-quantity"),
    pytest.param({"vcpu-seconds": True}, at(0), ValueError, id="bool-quantity"),
    pytest.param({"cpu-hours": 1}, at(0), ValueError, id="unknown-meter"),
    pytest.param({"Vcpu Seconds": 1}, at(0), ValueError, id="invalid-meter-name"),
    pytest.param({"vcpu-seconds": 1}, datetime(2025, 3, 1), ValueError, id="naive-datetime"),
    pytest.param({"vcpu-seconds": 1}, "2025-03-01T00:00:00Z", TypeError, id="string-time"),
]


@pytest.mark.parametrize(("meters", "when", "error"), BAD_OBSERVATIONS)
def test_bad_observations_are_refused(meters: dict, when: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        UsageTracker().observe("demo", "s", "Server", meters, True, when)  # type: ignore[arg-type]


def test_a_uid_cannot_change_kind() -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(0))
    with pytest.raises(ValueError, match="observed as Server"):
        t.observe("demo", "s", "Volume", {"volume-byte-seconds": 1}, False, at(1))


def test_custom_meter_catalogue() -> None:
    t = UsageTracker(meters=[*DEFAULT_METERS, Meter("gpu-seconds", "gpu", True)])
    t.observe("demo", "s", "Server", {"gpu-seconds": 1}, False, at(0))
    t.observe("demo", "s", "Server", {"gpu-seconds": 1}, True, at(30))
    assert t.close("demo", at(0), at(60)).totals == {"gpu-seconds": 1800}
    with pytest.raises(ValueError):
        Meter("gpu-seconds/x", "gpu", True)
    with pytest.raises(ValueError, match="twice"):
        UsageTracker(meters=[*DEFAULT_METERS, DEFAULT_METERS[0]])


# --------------------------------------------------------------------------- closing rules


def test_closing_the_same_interval_twice_yields_the_same_result() -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(10))
    first = t.close("demo", at(0), at(60))
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, False, at(70))  # a later change
    assert t.close("demo", at(0), at(60)) == first
    assert t.usage("demo", at(0), at(60)) == first


CLOSE_ERRORS = [
    pytest.param(0, 30, "already closed", id="older-interval"),
    pytest.param(90, 120, "skip usage", id="skipping-ahead"),
    pytest.param(60, 60, "empty interval", id="empty"),
    pytest.param(60, 30, "empty interval", id="backwards"),
]


@pytest.mark.parametrize(("start", "end", "message"), CLOSE_ERRORS)
def test_closing_out_of_turn_is_refused(start: int, end: int, message: str) -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(10))
    t.close("demo", at(0), at(60))
    with pytest.raises(IntervalError, match=message):
        t.close("demo", at(start), at(end))


def test_usage_does_not_change_state() -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(10))
    before = t.dumps()
    t.usage("demo", at(0), at(60))
    assert t.dumps() == before


def test_due_lists_every_missed_interval_after_an_outage() -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(10))
    t.observe("other", "v", "Volume", {"volume-byte-seconds": 1}, False, at(hours=1, minutes=5))
    due = t.due(at(hours=3, minutes=1))
    assert [(i.project, format_time(i.start), format_time(i.end)) for i in due] == [
        ("demo", "2025-03-01T00:00:00Z", "2025-03-01T01:00:00Z"),
        ("demo", "2025-03-01T01:00:00Z", "2025-03-01T02:00:00Z"),
        ("other", "2025-03-01T01:00:00Z", "2025-03-01T02:00:00Z"),
        ("demo", "2025-03-01T02:00:00Z", "2025-03-01T03:00:00Z"),
        ("other", "2025-03-01T02:00:00Z", "2025-03-01T03:00:00Z"),
    ]
    for i in due:
        t.close(*i)
    assert t.due(at(hours=3, minutes=59)) == []


def test_the_last_known_state_accrues_while_nobody_watches() -> None:
    # Operator down from 00:20 to 02:30: the server was last seen running, and keeps
    # accruing until the operator observes it stopped (with the real stop time).
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(0))
    t.close("demo", at(0), at(60))
    t.close("demo", at(60), at(120))
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, False, at(hours=2, minutes=10))
    assert t.close("demo", at(120), at(180)).totals == {"vcpu-seconds": 600}


def test_an_interval_may_end_off_the_grid_and_the_next_realigns() -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(0))
    assert t.close("demo", at(0), at(25)).totals == {"vcpu-seconds": 1500}  # e.g. project deleted at 00:25
    assert [(format_time(i.start), format_time(i.end)) for i in t.due(at(60))] == [
        ("2025-03-01T00:25:00Z", "2025-03-01T01:00:00Z")
    ]


# --------------------------------------------------------------------------- late and repeated events


def test_out_of_order_events_in_an_open_interval_are_exact() -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(0))
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(40))   # started again at 40
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, False, at(20))  # the stop, learned late
    assert t.close("demo", at(0), at(60)).totals == {"vcpu-seconds": 1200 + 1200}


def test_an_observation_at_the_same_instant_replaces_the_earlier_one() -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(0))
    t.observe("demo", "s", "Server", {"vcpu-seconds": 2}, True, at(0))
    assert t.close("demo", at(0), at(60)).totals == {"vcpu-seconds": 7200}


def test_repeated_observations_report_no_change() -> None:
    t = UsageTracker()
    assert t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(0)) is True
    assert t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(5)) is False
    assert t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, False, at(6)) is True
    assert t.remove("demo", "nope", at(7)) is False
    assert t.remove("demo", "s", at(8)) is True
    assert t.remove("demo", "s", at(9)) is False


def test_a_late_event_never_rewrites_a_closed_interval() -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(0))
    first = t.close("demo", at(0), at(60))
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, False, at(50))  # stop at 00:50, learned at 01:05
    assert t.close("demo", at(0), at(60)) == first
    assert t.close("demo", at(60), at(120)).totals == {}  # stopped from the cursor on


def test_a_stale_event_older_than_what_is_known_at_the_cursor_is_ignored() -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(30))
    t.close("demo", at(0), at(60))
    assert t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, False, at(10)) is False
    assert t.close("demo", at(60), at(120)).totals == {"vcpu-seconds": 3600}


def test_a_deleted_resource_does_not_come_back_from_a_stale_event() -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(0))
    t.remove("demo", "s", at(30))
    t.close("demo", at(0), at(60))
    assert t.resources("demo") == {}
    assert t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(20)) is False
    assert t.close("demo", at(60), at(120)).totals == {}


def test_resources_lists_live_ones_for_a_resync() -> None:
    t = UsageTracker()
    t.observe("demo", "a", "Server", {"vcpu-seconds": 1}, True, at(0))
    t.observe("demo", "b", "Volume", {"volume-byte-seconds": 1}, False, at(0))
    t.remove("demo", "a", at(5))
    assert t.resources("demo") == {"b": "Volume"}
    assert t.resources("unknown") == {}


# --------------------------------------------------------------------------- restart

RESTART_EVENTS: list[tuple] = [
    ("up", "s1", 5, SERVER, True),
    ("up", "v1", 7, {"volume-byte-seconds": 50 * GiB}, False),
    ("close", 0),
    ("up", "s1", 75, SERVER, False),
    ("up", "s2", 80, {"vcpu-seconds": 1}, True),
    ("close", 1),
    ("up", "s1", 130, SERVER, True),
    ("del", "s2", 150),
    ("close", 2),
    ("del", "v1", 200),
    ("close", 3),
    ("close", 4),
]


def run(events: list[tuple], restart_after: int | None = None) -> list:
    t = UsageTracker()
    out = []
    for i, ev in enumerate(events):
        if ev[0] == "close":
            out.append(t.close("demo", at(hours=ev[1]), at(hours=ev[1] + 1)))
        else:
            play(t, [ev])
        if i == restart_after:
            t = UsageTracker.loads(t.dumps())
    return out


@pytest.mark.parametrize("cut", range(len(RESTART_EVENTS)))
def test_restart_at_any_point_neither_drops_nor_double_counts(cut: int) -> None:
    assert run(RESTART_EVENTS, restart_after=cut) == run(RESTART_EVENTS)


def test_restart_then_closing_the_last_interval_again_is_idempotent() -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(10))
    first = t.close("demo", at(0), at(60))
    again = UsageTracker.loads(t.dumps())
    assert again.close("demo", at(0), at(60)) == first
    assert again.close("demo", at(60), at(120)).totals == {"vcpu-seconds": 3600}


def test_state_from_another_format_is_refused() -> None:
    with pytest.raises(ValueError, match="not a metering state"):
        UsageTracker.from_dict({"format": "something-else"})


def test_state_with_meters_outside_the_catalogue_is_refused() -> None:
    t = UsageTracker(meters=[*DEFAULT_METERS, Meter("gpu-seconds", "gpu", True)])
    t.observe("demo", "s", "Server", {"gpu-seconds": 1}, True, at(0))
    with pytest.raises(ValueError, match="gpu-seconds"):
        UsageTracker.loads(t.dumps())


RESUME_CASES = [
    # (closed by the tracker, ledger recorded until, expected cursor) in minutes
    pytest.param(60, 120, 120, id="tracker-behind-the-ledger-catches-up"),
    pytest.param(60, 60, 60, id="in-step"),
    pytest.param(None, 0, 0, id="lost-state-moves-back-to-the-ledger-head"),
    pytest.param(60, None, 60, id="nothing-recorded-changes-nothing"),
]


@pytest.mark.parametrize(("closed", "recorded", "cursor"), RESUME_CASES)
def test_resume_aligns_the_cursor_with_the_ledger(closed: int | None, recorded: int | None, cursor: int) -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(70))  # cursor starts at 01:00 if unclosed
    if closed is not None:
        t = UsageTracker()
        t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(10))
        t.close("demo", at(0), at(closed))
    t.resume("demo", None if recorded is None else at(recorded))
    assert t.cursor("demo") == at(cursor)


def test_resume_refuses_a_ledger_that_lost_a_closed_interval() -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(10))
    t.close("demo", at(0), at(60))
    with pytest.raises(IntervalError, match="never recorded"):
        t.resume("demo", at(0))


def test_resume_of_an_unknown_project_starts_it_at_the_ledger_head() -> None:
    t = UsageTracker()
    t.resume("demo", at(120))
    assert [i.start for i in t.due(at(240))] == [at(120), at(180)]


def test_forget_drops_a_project() -> None:
    t = UsageTracker()
    t.observe("demo", "s", "Server", {"vcpu-seconds": 1}, True, at(0))
    t.forget("demo")
    assert t.projects() == [] and t.cursor("demo") is None


# --------------------------------------------------------------------------- against a brute-force model


def brute_force(events: list[tuple], seconds: int, meters: dict[str, Meter]) -> dict[str, int]:
    """Second-by-second simulation of the same events (time in seconds)."""
    state: dict[str, tuple[dict[str, int], bool] | None] = {}
    acc: dict[str, int] = {}
    by_time: dict[int, list[tuple]] = {}
    for ev in events:
        by_time.setdefault(ev[1], []).append(ev)
    for s in range(seconds):
        for ev in by_time.get(s, []):
            state[ev[2]] = None if ev[0] == "del" else (ev[3], ev[4])
        for st in state.values():
            if st is None:
                continue
            for m, q in st[0].items():
                if q and (st[1] or not meters[m].while_running):
                    acc[m] = acc.get(m, 0) + q
    return {k: v for k, v in acc.items() if v}


@pytest.mark.parametrize("seed", range(25))
def test_random_event_streams_match_a_brute_force_model(seed: int) -> None:
    rng = random.Random(seed)
    interval, horizon = 60, 600
    t = UsageTracker(interval=interval)
    t.resume("p", 0)  # metering of the project starts at 0, whatever arrives first
    catalogue = {m.name: m for m in DEFAULT_METERS}
    events = []
    for _ in range(rng.randint(1, 30)):
        when = rng.randrange(0, horizon)
        uid = rng.choice("abc")
        if rng.random() < 0.2:
            events.append(("del", when, uid))
        else:
            names = rng.sample(["vcpu-seconds", "volume-byte-seconds"], k=rng.randint(1, 2))
            meters = {m: rng.randint(0, 3) for m in names}
            events.append(("up", when, uid, meters, rng.random() < 0.6))
    events.sort(key=lambda e: e[1])  # distinct instants per uid are kept; same-instant: last wins
    dedup: dict[tuple[int, str], tuple] = {}
    for ev in events:
        dedup[(ev[1], ev[2])] = ev
    events = sorted(dedup.values(), key=lambda e: e[1])
    shuffled = events[:]
    rng.shuffle(shuffled)  # arrival order does not matter while the interval is open
    for ev in shuffled:
        if ev[0] == "del":
            t.remove("p", ev[2], ev[1])
        else:
            t.observe("p", ev[2], "Server", ev[3], ev[4], ev[1])
    got: dict[str, int] = {}
    for i in t.due(horizon):
        for m, v in t.close(*i).totals.items():
            got[m] = got.get(m, 0) + v
    assert to_epoch(t.cursor("p")) == horizon
    assert got == brute_force(events, horizon, catalogue)


# --------------------------------------------------------------------------- times


def test_time_format_round_trips_and_is_strict() -> None:
    assert format_time(at(61)) == "2025-03-01T01:01:00Z"
    assert parse_time("2025-03-01T01:01:00Z") == at(61)
    for bad in ("2025-03-01T01:01:00+00:00", "2025-03-01 01:01:00Z", "2025-03-01T01:01:00.5Z", 5):
        with pytest.raises(ValueError):
            parse_time(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- rating

PRICES = PriceList(
    currency="EUR",
    rates={
        "vcpu-seconds": Rate(amount=5, per=3600),               # 5 cents per vCPU-hour
        "volume-byte-seconds": Rate(amount=10, per=GiB * 3600 * 730),  # 10 cents per GiB-month
        "volume-byte-seconds/ssd": Rate(amount=25, per=GiB * 3600 * 730),
    },
)

RATING = [
    pytest.param({"vcpu-seconds": 3600}, {"vcpu-seconds": 5}, 5, (), id="one-vcpu-hour"),
    pytest.param({"vcpu-seconds": 1800}, {"vcpu-seconds": 3}, 3, (), id="half-rounds-up"),
    pytest.param({"vcpu-seconds": 1799}, {"vcpu-seconds": 2}, 2, (), id="below-half-rounds-down"),
    pytest.param({"volume-byte-seconds": 100 * GiB * 3600 * 730}, {"volume-byte-seconds": 1000}, 1000, (),
                 id="100-GiB-month"),
    pytest.param({"volume-byte-seconds/ssd": 4 * GiB * 3600 * 730}, {"volume-byte-seconds/ssd": 100}, 100, (),
                 id="qualified-meter-has-its-own-price"),
    pytest.param({"memory-byte-seconds": 10}, {}, 0, ("memory-byte-seconds",), id="unpriced-is-free-and-listed"),
]


@pytest.mark.parametrize(("totals", "lines", "total", "unpriced"), RATING)
def test_rating(totals: dict, lines: dict, total: int, unpriced: tuple) -> None:
    cost = PRICES.rate(totals)
    assert (cost.currency, cost.lines, cost.total, cost.unpriced) == ("EUR", lines, total, unpriced)


def test_qualified_meter_falls_back_to_the_base_price() -> None:
    assert PRICES.rate({"vcpu-seconds/gold": 7200}).lines == {"vcpu-seconds/gold": 10}


def test_price_list_from_a_config_map_shape() -> None:
    p = PriceList.from_dict({"currency": "USD", "rates": {"vcpu-seconds": {"amount": 4, "per": 3600}}})
    assert p.rate({"vcpu-seconds": 36000}).total == 40
    for bad in ({"currency": "usd", "rates": {}}, {"currency": "USD", "rates": {"x": {"amount": 1.5}}},
                {"currency": "USD", "rates": {"x": {"amount": 1, "per": 0}}}):
        with pytest.raises(ValueError):
            PriceList.from_dict(bad)
