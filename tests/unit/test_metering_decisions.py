"""The metering closer's decisions (stratus.core.metering): what a tick does, when an
observed change took effect, which tracked resources are gone. Table-driven."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stratus.core.metering import TickStep, observation_time, parse_kube_time, tick_step, vanished

T0 = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)


def t(seconds: int) -> datetime:
    return datetime.fromtimestamp(T0.timestamp() + seconds, UTC)


@pytest.mark.parametrize(
    "text, expected",
    [("2026-01-01T10:00:00Z", T0), ("2026-01-01T10:00:00", T0), ("2026-01-01T11:00:00+01:00", T0),
     (None, None), ("", None), ("yesterday", None)],
    ids=["zulu", "naive-is-utc", "offset", "none", "empty", "garbage"],
)
def test_kube_times(text, expected):
    assert parse_kube_time(text) == expected


NOW = t(600)

# (id, new, running_changed, transition, created, floor, expected)
TIMES = [
    ("new-counts-from-its-transition", True, False, t(100), t(50), None, t(100)),
    ("new-without-transition-from-creation", True, False, None, t(50), None, t(50)),
    ("new-without-timestamps-from-now", True, False, None, None, None, NOW),
    ("start-or-stop-from-its-transition", False, True, t(300), t(50), None, t(300)),
    ("start-or-stop-without-transition-from-now", False, True, None, t(50), None, NOW),
    ("resize-from-now", False, False, t(300), t(50), None, NOW),
    ("never-in-the-future", True, False, t(900), None, None, NOW),
    ("new-project-not-before-the-floor", True, False, t(100), None, t(200), t(200)),
    ("floor-does-not-move-later-times", True, False, t(300), None, t(200), t(300)),
]


@pytest.mark.parametrize("new, running_changed, transition, created, floor, expected", [c[1:] for c in TIMES],
                         ids=[c[0] for c in TIMES])
def test_when_a_change_took_effect(new, running_changed, transition, created, floor, expected):
    assert observation_time(new=new, running_changed=running_changed, transition=transition, created=created,
                            now=NOW, floor=floor) == expected


TRACKED = {"acme": {"u1": "Server", "u2": "Volume"}, "beta": {"u3": "Server"}}

# (id, live, indexed, expected)
GONE = [
    ("all-there", {"Server": {"u1", "u3"}, "Volume": {"u2"}}, set(), []),
    ("deleted-unseen", {"Server": {"u1"}, "Volume": {"u2"}}, set(), [("beta", "u3", "Server")]),
    ("event-not-yet-processed", {"Server": {"u1"}, "Volume": {"u2"}}, {"u3"}, []),
    ("kind-not-installed-judges-nothing", {"Server": {"u1", "u3"}}, set(), []),
    ("everything-gone", {"Server": set(), "Volume": set()}, set(),
     [("acme", "u1", "Server"), ("acme", "u2", "Volume"), ("beta", "u3", "Server")]),
]


@pytest.mark.parametrize("live, indexed, expected", [c[1:] for c in GONE], ids=[c[0] for c in GONE])
def test_which_tracked_resources_are_gone(live, indexed, expected):
    assert vanished(TRACKED, live, indexed) == expected


# (id, ledger_open, ledger_off, now, next_open, due, dirty_since, monotonic, expected)
TICKS = [
    ("ledger-closed-retry-due", False, False, 100.0, 100.0, False, None, 0.0, TickStep.OPEN),
    ("ledger-closed-retry-later", False, False, 99.0, 100.0, False, None, 0.0, TickStep.IDLE),
    ("ledger-off", False, True, 500.0, 100.0, False, 1.0, 5.0, TickStep.IDLE),
    ("closed-ledger-never-saves", False, False, 99.0, 100.0, True, 1.0, 5.0, TickStep.IDLE),
    ("intervals-due", True, False, 500.0, 0.0, True, None, 0.0, TickStep.CLOSE),
    ("due-wins-over-save", True, False, 500.0, 0.0, True, 1.0, 5.0, TickStep.CLOSE),
    ("dirty-long-enough", True, False, 500.0, 0.0, False, 1.0, 2.0, TickStep.SAVE),
    ("dirty-just-now", True, False, 500.0, 0.0, False, 1.0, 1.5, TickStep.IDLE),
    ("nothing", True, False, 500.0, 0.0, False, None, 9.0, TickStep.IDLE),
]


@pytest.mark.parametrize("ledger_open, ledger_off, now, next_open, due, dirty_since, monotonic, expected",
                         [c[1:] for c in TICKS], ids=[c[0] for c in TICKS])
def test_what_a_tick_does(ledger_open, ledger_off, now, next_open, due, dirty_since, monotonic, expected):
    assert tick_step(ledger_open=ledger_open, ledger_off=ledger_off, now=now, next_open=next_open, due=due,
                     dirty_since=dirty_since, monotonic=monotonic, save_delay=1.0) == expected
