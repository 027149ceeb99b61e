"""The one status writer's decisions (core.status): which fields to patch, and which
Event a write deserves. The write itself is drivers.kube.write_status."""

from __future__ import annotations

import pytest

from stratus.core.status import status_diff, transition_event


def ready(reason: str, message: str = "m") -> list[dict]:
    return [{"type": "Ready", "status": "True", "reason": reason, "message": message}]


@pytest.mark.parametrize(
    "old, new, minor, expected",
    [
        pytest.param(None, {"phase": "ACTIVE"}, (), {"phase": "ACTIVE"}, id="first-status"),
        pytest.param({"phase": "ACTIVE", "node": "n1"}, {"phase": "ACTIVE"}, (), {}, id="unchanged"),
        pytest.param({"phase": "ACTIVE", "node": "n1"}, {"phase": "ACTIVE", "node": "n2"}, (), {"node": "n2"},
                     id="only-the-changed-field"),
        pytest.param({"phase": "ACTIVE", "location": {"key": "k"}}, {"phase": "ACTIVE", "location": None}, (),
                     {"location": None}, id="none-removes-a-field"),
        pytest.param({"phase": "ACTIVE"}, {"phase": "ACTIVE", "location": None}, (), {}, id="absent-equals-none"),
        pytest.param({"members": ["a"]}, {"members": ["a", "b"]}, (), {"members": ["a", "b"]}, id="lists-compare-whole"),
        pytest.param({"power": "on", "lastPowerCheck": "t1"}, {"power": "on", "lastPowerCheck": "t2"},
                     ("lastPowerCheck",), {}, id="minor-alone-is-not-written"),
        pytest.param({"power": "on", "lastPowerCheck": "t1"}, {"power": "off", "lastPowerCheck": "t2"},
                     ("lastPowerCheck",), {"power": "off", "lastPowerCheck": "t2"}, id="minor-rides-along"),
    ],
)
def test_status_diff(old, new, minor, expected):
    assert status_diff(old, new, minor=minor) == expected


@pytest.mark.parametrize(
    "old, new, on_reason, expected",
    [
        pytest.param(None, {"phase": "BUILD", "conditions": ready("Scheduling", "waiting")}, False,
                     ("Normal", "Scheduling", "new -> BUILD: waiting"), id="first-phase"),
        pytest.param({"phase": "BUILD"}, {"phase": "ERROR", "conditions": ready("Unschedulable", "no node")}, False,
                     ("Warning", "Unschedulable", "BUILD -> ERROR: no node"), id="error-phase-warns"),
        pytest.param({"phase": "BUILD", "conditions": ready("Scheduling")},
                     {"phase": "BUILD", "conditions": ready("Starting")}, False, None, id="reason-moves-quietly"),
        pytest.param({"phase": "BUILD", "conditions": ready("Scheduling")},
                     {"phase": "BUILD", "conditions": ready("Starting", "booting")}, True,
                     ("Normal", "Starting", "BUILD -> BUILD: booting"), id="reason-moves-with-event"),
        pytest.param({"phase": "ACTIVE", "conditions": ready("Running")}, {"node": "n2"}, True, None,
                     id="no-phase-no-event"),
        pytest.param({"phase": "queued"}, {"phase": "active"}, False, ("Normal", "active", "queued -> active: "),
                     id="no-ready-condition"),
    ],
)
def test_transition_event(old, new, on_reason, expected):
    changed = status_diff(old, new)
    assert transition_event(old, new, changed, error_phase="ERROR", on_reason=on_reason) == expected
