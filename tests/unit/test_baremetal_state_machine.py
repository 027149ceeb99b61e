"""The bare-metal provisioning state machine, transition by transition (metal3 host_state_machine_test style).

Each row of a table is one step: a state (and status), what the user wants, what the
controller saw; the expected next state, actions and requeue. The walk-through at the end
drives the machine against the in-memory BMC fake the way a controller would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random

import pytest

from stratus.core.baremetal import (
    ALLOWED,
    HANDLERS,
    Action,
    ActionFailure,
    ActionType,
    BootCallback,
    Desired,
    ErrorInfo,
    Observed,
    Policy,
    Power,
    Request,
    State,
    Status,
    step,
)
from stratus.drivers import ipmi
from tests.fakes.ipmi import FakeBmcFleet

NOW = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
ON, OFF = Power.ON, Power.OFF
A = ActionType
S = State


def ago(seconds: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def status(state: State | None, **kw) -> Status:
    kw.setdefault("registered", state not in (None, S.REGISTERING, S.REGISTRATION_ERROR))
    kw.setdefault("state_since", ago(60) if state else None)
    return Status(state=state, **kw)


def err(state: State, count: int = 1, seconds_ago: float = 1, reason: str = "BMCUnreachable") -> dict:
    return {"error": ErrorInfo(state, reason, "boom", ago(seconds_ago)), "error_count": count}


def ok(power: Power | None = None, **kw) -> Observed:
    return Observed(bmc_reachable=True, credentials_ok=True, power=power, **kw)


def failed(action: ActionType, reason: str = "BMCCommandFailed", power: Power | None = None) -> Observed:
    return Observed(power=power, failure=ActionFailure(action, reason, f"{action.value} failed: {reason}"))


IMG = "http://images.local/ubuntu.qcow2"
IMG2 = "http://images.local/debian.qcow2"
POLL = Policy().poll_interval
RESYNC = Policy().resync_interval

# (id, status, desired, observed, next state, action types, requeue or ... for "don't care")
TRANSITIONS = [
    # --- registering
    ("new node validates its BMC", status(None), Desired(), Observed(), S.REGISTERING, (A.VALIDATE_BMC,), POLL),
    ("registering validates its BMC", status(S.REGISTERING), Desired(), Observed(), S.REGISTERING, (A.VALIDATE_BMC,), POLL),
    ("BMC answers: inspect", status(S.REGISTERING), Desired(), ok(OFF), S.INSPECTING, (), 0),
    ("inspection disabled: straight to available", status(S.REGISTERING), Desired(inspect=False), ok(OFF), S.AVAILABLE, (), 0),
    ("wrong credentials", status(S.REGISTERING), Desired(), Observed(bmc_reachable=True, credentials_ok=False), S.REGISTRATION_ERROR, (), 10),
    ("BMC unreachable", status(S.REGISTERING), Desired(), Observed(bmc_reachable=False), S.REGISTRATION_ERROR, (), 10),
    ("validate action failed", status(S.REGISTERING), Desired(), failed(A.VALIDATE_BMC, "BMCUnreachable"), S.REGISTRATION_ERROR, (), 10),
    ("re-registered after detach resumes provisioned", status(S.REGISTERING, resume_state=S.PROVISIONED, image=IMG), Desired(image=IMG), ok(ON), S.PROVISIONED, (), 0),
    ("deleting a node never registered", status(S.REGISTERING), Desired(deleting=True), Observed(), S.DELETED, (), None),
    # --- inspecting
    ("inspecting runs an inspection", status(S.INSPECTING), Desired(), ok(OFF), S.INSPECTING, (A.INSPECT,), POLL),
    ("inspection result: available", status(S.INSPECTING), Desired(), ok(OFF, inspection={"cpu": {"count": 2}}), S.AVAILABLE, (), 0),
    ("inspection failed", status(S.INSPECTING), Desired(), failed(A.INSPECT), S.INSPECTION_ERROR, (), 10),
    ("inspection auth failure is a registration error", status(S.INSPECTING), Desired(), failed(A.INSPECT, "AuthenticationFailed"), S.REGISTRATION_ERROR, (), 10),
    ("deleting while inspecting", status(S.INSPECTING), Desired(deleting=True), ok(OFF), S.DELETING, (), 0),
    # --- available: power follows spec.online
    ("available, online, off: power on", status(S.AVAILABLE), Desired(online=True), ok(OFF), S.AVAILABLE, (A.POWER_ON,), POLL),
    ("available, offline, on: power off", status(S.AVAILABLE), Desired(online=False), ok(ON), S.AVAILABLE, (A.POWER_OFF,), POLL),
    ("available, as wanted: resync later", status(S.AVAILABLE), Desired(online=True), ok(ON), S.AVAILABLE, (), RESYNC),
    ("available, power unknown: look again soon", status(S.AVAILABLE), Desired(), Observed(), S.AVAILABLE, (), POLL),
    ("available, BMC gone: power-management error", status(S.AVAILABLE), Desired(), Observed(bmc_reachable=False), S.POWER_MANAGEMENT_ERROR, (), 10),
    ("available, credentials changed: registration error", status(S.AVAILABLE), Desired(), Observed(bmc_reachable=True, credentials_ok=False), S.REGISTRATION_ERROR, (), 10),
    ("available, power on failed", status(S.AVAILABLE), Desired(), failed(A.POWER_ON, power=OFF), S.POWER_MANAGEMENT_ERROR, (), 10),
    ("available, image set: provision", status(S.AVAILABLE), Desired(image=IMG), ok(OFF), S.PROVISIONING, (), 0),
    ("available, reinspect request", status(S.AVAILABLE), Desired(reinspect=Request("r1")), ok(OFF), S.INSPECTING, (), 0),
    ("available, reinspect already handled", status(S.AVAILABLE, handled_reinspect="r1"), Desired(reinspect=Request("r1")), ok(ON), S.AVAILABLE, (), RESYNC),
    ("available, deleting", status(S.AVAILABLE), Desired(deleting=True), ok(ON), S.DELETING, (), 0),
    # --- reboot requests in steady states
    ("reboot request, host on: hard reset", status(S.PROVISIONED, image=IMG), Desired(image=IMG, reboot=Request("b1")), ok(ON), S.PROVISIONED, (A.REBOOT,), POLL),
    ("reboot request handled once", status(S.PROVISIONED, image=IMG, handled_reboot="b1"), Desired(image=IMG, reboot=Request("b1")), ok(ON), S.PROVISIONED, (), RESYNC),
    ("reboot request, host off: power on", status(S.PROVISIONED, image=IMG), Desired(image=IMG, reboot=Request("b2")), ok(OFF), S.PROVISIONED, (A.POWER_ON,), POLL),
    ("reboot request, offline host: recorded only", status(S.PROVISIONED, image=IMG), Desired(image=IMG, online=False, reboot=Request("b3")), ok(OFF), S.PROVISIONED, (), RESYNC),
    ("soft reboot starts with soft off", status(S.AVAILABLE), Desired(reboot=Request("s1", "soft")), ok(ON), S.AVAILABLE, (A.SOFT_OFF,), POLL),
    ("soft reboot: off, power on", status(S.AVAILABLE, phase="reboot-soft-off", phase_since=ago(10), handled_reboot="s1"), Desired(reboot=Request("s1", "soft")), ok(OFF), S.AVAILABLE, (A.POWER_ON,), POLL),
    ("soft reboot: waiting", status(S.AVAILABLE, phase="reboot-soft-off", phase_since=ago(10), handled_reboot="s1"), Desired(reboot=Request("s1", "soft")), ok(ON), S.AVAILABLE, (), POLL),
    ("soft reboot: OS ignores it, hard off", status(S.AVAILABLE, phase="reboot-soft-off", phase_since=ago(500), handled_reboot="s1"), Desired(reboot=Request("s1", "soft")), ok(ON), S.AVAILABLE, (A.POWER_OFF,), POLL),
    # --- provisioning
    ("provisioning, host off: PXE boot", status(S.PROVISIONING, image=IMG, attempt=1, phase="boot"), Desired(image=IMG), ok(OFF), S.PROVISIONING, (A.PREPARE_BOOT, A.SET_BOOT_DEVICE, A.POWER_ON), POLL),
    ("provisioning, host on: PXE reboot", status(S.PROVISIONING, image=IMG, attempt=1, phase="boot"), Desired(image=IMG), ok(ON), S.PROVISIONING, (A.PREPARE_BOOT, A.SET_BOOT_DEVICE, A.REBOOT), POLL),
    ("provisioning, waiting for the callback", status(S.PROVISIONING, image=IMG, attempt=1, phase="wait-callback", phase_since=ago(30)), Desired(image=IMG), ok(ON), S.PROVISIONING, (), POLL),
    ("provisioning, callback: boot from disk", status(S.PROVISIONING, image=IMG, attempt=1, phase="wait-callback", phase_since=ago(30)), Desired(image=IMG), ok(ON, boot_callback=BootCallback(1)), S.PROVISIONED, (A.SET_BOOT_DEVICE, A.CLEAR_BOOT, A.REBOOT), POLL),
    ("provisioning, callback, offline: power off after", status(S.PROVISIONING, image=IMG, attempt=1, phase="wait-callback", phase_since=ago(30)), Desired(image=IMG, online=False), ok(ON, boot_callback=BootCallback(1)), S.PROVISIONED, (A.SET_BOOT_DEVICE, A.CLEAR_BOOT, A.POWER_OFF), POLL),
    ("provisioning, stale callback of attempt 1 ignored", status(S.PROVISIONING, image=IMG, attempt=2, phase="wait-callback", phase_since=ago(30)), Desired(image=IMG), ok(ON, boot_callback=BootCallback(1)), S.PROVISIONING, (), POLL),
    ("provisioning, installer failed", status(S.PROVISIONING, image=IMG, attempt=1, phase="wait-callback", phase_since=ago(30)), Desired(image=IMG), ok(ON, boot_callback=BootCallback(1, False, "disk not found")), S.PROVISIONING_ERROR, (), 10),
    ("provisioning, no callback in time", status(S.PROVISIONING, image=IMG, attempt=1, phase="wait-callback", phase_since=ago(4000)), Desired(image=IMG), ok(ON), S.PROVISIONING_ERROR, (), 10),
    ("provisioning, set boot device failed", status(S.PROVISIONING, image=IMG, attempt=1, phase="wait-callback"), Desired(image=IMG), failed(A.SET_BOOT_DEVICE), S.PROVISIONING_ERROR, (), 10),
    ("provisioning, image removed: deprovision", status(S.PROVISIONING, image=IMG, attempt=1, phase="wait-callback"), Desired(), ok(ON), S.DEPROVISIONING, (), 0),
    ("provisioning, deleting: deprovision first", status(S.PROVISIONING, image=IMG, attempt=1, phase="wait-callback"), Desired(image=IMG, deleting=True), ok(ON), S.DEPROVISIONING, (), 0),
    # --- provisioned
    ("provisioned, steady", status(S.PROVISIONED, image=IMG), Desired(image=IMG), ok(ON), S.PROVISIONED, (), RESYNC),
    ("provisioned, offline: power off", status(S.PROVISIONED, image=IMG), Desired(image=IMG, online=False), ok(ON), S.PROVISIONED, (A.POWER_OFF,), POLL),
    ("provisioned, image removed", status(S.PROVISIONED, image=IMG), Desired(), ok(ON), S.DEPROVISIONING, (), 0),
    ("provisioned, image changed", status(S.PROVISIONED, image=IMG), Desired(image=IMG2), ok(ON), S.DEPROVISIONING, (), 0),
    ("provisioned, power off failed", status(S.PROVISIONED, image=IMG), Desired(image=IMG, online=False), failed(A.POWER_OFF, power=ON), S.POWER_MANAGEMENT_ERROR, (), 10),
    # --- deprovisioning
    ("deprovisioning starts", status(S.DEPROVISIONING, image=IMG, phase="start"), Desired(), ok(ON), S.DEPROVISIONING, (A.POWER_OFF, A.CLEAR_BOOT), POLL),
    ("deprovisioning, still on: power off again", status(S.DEPROVISIONING, image=IMG, phase="wait-off", phase_since=ago(10)), Desired(), ok(ON), S.DEPROVISIONING, (A.POWER_OFF,), POLL),
    ("deprovisioned: available", status(S.DEPROVISIONING, image=IMG, phase="wait-off", phase_since=ago(10)), Desired(), ok(OFF), S.AVAILABLE, (), 0),
    ("deprovisioned for a new image: available, then provisioning", status(S.DEPROVISIONING, image=IMG, phase="wait-off", phase_since=ago(10)), Desired(image=IMG2), ok(OFF), S.AVAILABLE, (), 0),
    ("deprovisioned before delete", status(S.DEPROVISIONING, image=IMG, phase="wait-off", phase_since=ago(10)), Desired(deleting=True), ok(OFF), S.DELETING, (), 0),
    ("deprovisioning, never off", status(S.DEPROVISIONING, image=IMG, phase="wait-off", phase_since=ago(1000)), Desired(), ok(ON), S.DEPROVISIONING_ERROR, (), 10),
    ("deprovisioning, power off failed", status(S.DEPROVISIONING, image=IMG, phase="wait-off"), Desired(), failed(A.POWER_OFF), S.DEPROVISIONING_ERROR, (), 10),
    # --- errors: backoff and retry
    ("registration error waits", status(S.REGISTRATION_ERROR, **err(S.REGISTRATION_ERROR, 1, 3)), Desired(), Observed(), S.REGISTRATION_ERROR, (), 7),
    ("registration error retries after backoff", status(S.REGISTRATION_ERROR, **err(S.REGISTRATION_ERROR, 1, 11)), Desired(), Observed(), S.REGISTERING, (), 0),
    ("third registration error waits 40s", status(S.REGISTRATION_ERROR, **err(S.REGISTRATION_ERROR, 3, 1)), Desired(), Observed(), S.REGISTRATION_ERROR, (), 39),
    ("registration error, BMC answers again: re-register now", status(S.REGISTRATION_ERROR, **err(S.REGISTRATION_ERROR, 5, 1)), Desired(), ok(OFF), S.REGISTERING, (), 0),
    ("inspection error retries", status(S.INSPECTION_ERROR, **err(S.INSPECTION_ERROR, 2, 25)), Desired(), ok(OFF), S.INSPECTING, (), 0),
    ("provisioning error retries with a new attempt", status(S.PROVISIONING_ERROR, image=IMG, attempt=1, **err(S.PROVISIONING_ERROR, 1, 11)), Desired(image=IMG), ok(ON), S.PROVISIONING, (), 0),
    ("provisioning error, image removed: deprovision now", status(S.PROVISIONING_ERROR, image=IMG, attempt=1, **err(S.PROVISIONING_ERROR, 4, 1)), Desired(), ok(ON), S.DEPROVISIONING, (), 0),
    ("deprovisioning error retries", status(S.DEPROVISIONING_ERROR, image=IMG, **err(S.DEPROVISIONING_ERROR, 1, 11)), Desired(), ok(ON), S.DEPROVISIONING, (), 0),
    ("power error returns to provisioned", status(S.POWER_MANAGEMENT_ERROR, image=IMG, resume_state=S.PROVISIONED, **err(S.POWER_MANAGEMENT_ERROR, 1, 11)), Desired(image=IMG), ok(ON), S.PROVISIONED, (), 0),
    ("power error waits", status(S.POWER_MANAGEMENT_ERROR, resume_state=S.AVAILABLE, **err(S.POWER_MANAGEMENT_ERROR, 2, 5)), Desired(), ok(ON), S.POWER_MANAGEMENT_ERROR, (), 15),
    ("error state ignores a late failure report", status(S.INSPECTION_ERROR, **err(S.INSPECTION_ERROR, 1, 1)), Desired(), failed(A.INSPECT), S.INSPECTION_ERROR, (), 10),
    ("deleting a node whose BMC never worked", status(S.REGISTRATION_ERROR, **err(S.REGISTRATION_ERROR, 2, 1)), Desired(deleting=True), Observed(), S.DELETED, (), None),
    ("deleting from a provisioning error deprovisions", status(S.PROVISIONING_ERROR, image=IMG, **err(S.PROVISIONING_ERROR, 1, 1)), Desired(image=IMG, deleting=True), ok(ON), S.DEPROVISIONING, (), 0),
    # --- deleting
    ("deleting powers off", status(S.DELETING), Desired(deleting=True), ok(ON), S.DELETING, (A.POWER_OFF,), POLL),
    ("deleting, off: deleted", status(S.DELETING), Desired(deleting=True), ok(OFF), S.DELETED, (), None),
    ("deleting, BMC unreachable: deleted anyway", status(S.DELETING), Desired(deleting=True), Observed(bmc_reachable=False, message="no answer"), S.DELETED, (), None),
    ("deleting, power off unreachable: deleted anyway", status(S.DELETING), Desired(deleting=True), failed(A.POWER_OFF, "BMCUnreachable"), S.DELETED, (), None),
    ("deleting, power off refused: retry with backoff", status(S.DELETING), Desired(deleting=True), failed(A.POWER_OFF, "BMCCommandFailed"), S.POWER_MANAGEMENT_ERROR, (), 10),
    ("deleted is final", status(S.DELETED), Desired(deleting=True), Observed(), S.DELETED, (), None),
    # --- paused and detached
    ("pause stops everything", status(S.PROVISIONING, image=IMG, phase="boot"), Desired(image=IMG, paused=True), ok(OFF), S.PAUSED, (), None),
    ("paused does nothing", status(S.PAUSED, paused_state=S.AVAILABLE), Desired(paused=True, online=True), ok(OFF), S.PAUSED, (), None),
    ("paused ignores deletion", status(S.PAUSED, paused_state=S.AVAILABLE), Desired(paused=True, deleting=True), ok(ON), S.PAUSED, (), None),
    ("unpause returns to the interrupted state", status(S.PAUSED, paused_state=S.PROVISIONING, image=IMG, phase="boot"), Desired(image=IMG), ok(OFF), S.PROVISIONING, (), 0),
    ("detach leaves the machine alone", status(S.PROVISIONED, image=IMG), Desired(image=IMG, detached=True), ok(ON), S.DETACHED, (), None),
    ("detached does nothing", status(S.DETACHED, resume_state=S.PROVISIONED, image=IMG), Desired(image=IMG, detached=True, online=False), ok(ON), S.DETACHED, (), None),
    ("attach re-registers", status(S.DETACHED, resume_state=S.PROVISIONED, image=IMG), Desired(image=IMG), Observed(), S.REGISTERING, (), 0),
    ("deleting a detached node touches nothing", status(S.DETACHED, resume_state=S.PROVISIONED, image=IMG), Desired(image=IMG, detached=True, deleting=True), ok(ON), S.DELETED, (), None),
    ("pause wins over detach", status(S.DETACHED, resume_state=S.AVAILABLE), Desired(detached=True, paused=True), Observed(), S.PAUSED, (), None),
]


@pytest.mark.parametrize(
    ("current", "desired", "observed", "next_state", "actions", "requeue"),
    [pytest.param(*row[1:], id=row[0]) for row in TRANSITIONS],
)
def test_transition(current, desired, observed, next_state, actions, requeue):
    decision = step(desired, observed, current, NOW)
    assert decision.state == next_state
    assert decision.status.state == next_state
    assert decision.action_types == actions
    if requeue is None:
        assert decision.requeue_after is None
    else:
        assert decision.requeue_after == pytest.approx(requeue, abs=0.01)
    if current.state is not None and next_state != current.state:
        assert next_state in ALLOWED[current.state]
        assert decision.history is not None
        assert decision.history.from_state == current.state and decision.history.to_state == next_state
    if decision.history is not None:
        assert decision.history.at == "2026-05-01T12:00:00Z"
        assert decision.status.history[-1] == decision.history


def test_every_state_has_a_handler_and_a_row_in_the_table():
    assert set(HANDLERS) == set(State) == set(ALLOWED)
    covered = {row[1].state or S.REGISTERING for row in TRANSITIONS}
    assert covered == set(State)


# ---------------------------------------------------------------------------------------
# Details of single transitions
# ---------------------------------------------------------------------------------------


def test_provisioning_actions_carry_image_attempt_and_devices():
    decision = step(Desired(image=IMG), ok(OFF), status(S.PROVISIONING, image=IMG, attempt=3, phase="boot"), NOW)
    prepare, boot, _ = decision.actions
    assert prepare == Action(A.PREPARE_BOOT, image=IMG, attempt=3)
    assert boot == Action(A.SET_BOOT_DEVICE, device="network")
    assert decision.status.phase == "wait-callback" and decision.status.phase_since == "2026-05-01T12:00:00Z"
    done = step(Desired(image=IMG), ok(ON, boot_callback=BootCallback(3)), decision.status, NOW)
    assert done.actions[0] == Action(A.SET_BOOT_DEVICE, device="disk", persistent=True)
    assert done.status.image == IMG and done.status.phase is None


def test_available_with_image_starts_a_new_attempt_and_clears_errors():
    decision = step(Desired(image=IMG), ok(OFF), status(S.AVAILABLE, attempt=2, error_count=3), NOW)
    assert decision.status.attempt == 3
    assert decision.status.image == IMG and decision.status.phase == "boot"
    assert decision.status.error_count == 0


@pytest.mark.parametrize(
    ("count", "delay"),
    [(1, 10), (2, 20), (3, 40), (4, 80), (5, 160), (6, 320), (7, 600), (12, 600)],
)
def test_backoff_doubles_up_to_the_cap(count, delay):
    assert Policy().backoff(count) == delay
    decision = step(Desired(), failed(A.INSPECT), status(S.INSPECTING, error_count=count - 1), NOW)
    assert decision.status.error_count == count
    assert decision.requeue_after == delay


def test_error_records_reason_message_and_time():
    decision = step(Desired(), failed(A.POWER_ON, "BMCCommandFailed", OFF), status(S.AVAILABLE), NOW)
    assert decision.status.error == ErrorInfo(S.POWER_MANAGEMENT_ERROR, "BMCCommandFailed", "power-on failed: BMCCommandFailed", "2026-05-01T12:00:00Z")
    assert decision.status.resume_state == S.AVAILABLE
    assert decision.history.event == "error" and "BMCCommandFailed" in decision.history.message


def test_reaching_a_steady_state_resets_the_error_count():
    current = status(S.POWER_MANAGEMENT_ERROR, resume_state=S.AVAILABLE, **err(S.POWER_MANAGEMENT_ERROR, 3, 100))
    decision = step(Desired(), ok(ON), current, NOW)
    assert decision.state == S.AVAILABLE
    assert decision.status.error_count == 0 and decision.status.error is None and decision.status.resume_state is None


@pytest.mark.parametrize(
    ("state", "action", "reason", "target", "resume"),
    [
        (S.REGISTERING, A.VALIDATE_BMC, "AuthenticationFailed", S.REGISTRATION_ERROR, None),
        (S.INSPECTING, A.INSPECT, "BMCUnreachable", S.INSPECTION_ERROR, None),
        (S.INSPECTING, A.INSPECT, "AuthenticationFailed", S.REGISTRATION_ERROR, S.INSPECTING),
        (S.AVAILABLE, A.POWER_ON, "BMCUnreachable", S.POWER_MANAGEMENT_ERROR, S.AVAILABLE),
        (S.PROVISIONED, A.REBOOT, "BMCCommandFailed", S.POWER_MANAGEMENT_ERROR, S.PROVISIONED),
        (S.PROVISIONED, A.POWER_OFF, "AuthenticationFailed", S.REGISTRATION_ERROR, S.PROVISIONED),
        (S.PROVISIONING, A.PREPARE_BOOT, "BootServerError", S.PROVISIONING_ERROR, None),
        (S.PROVISIONING, A.POWER_ON, "BMCUnreachable", S.PROVISIONING_ERROR, None),
        (S.DEPROVISIONING, A.CLEAR_BOOT, "BootServerError", S.DEPROVISIONING_ERROR, None),
        (S.DELETING, A.POWER_OFF, "PowerStateTimeout", S.POWER_MANAGEMENT_ERROR, S.DELETING),
    ],
)
def test_failed_actions_lead_to_the_error_state_of_the_operation(state, action, reason, target, resume):
    decision = step(Desired(image=IMG if state in (S.PROVISIONING, S.PROVISIONED) else None), failed(action, reason), status(state, image=IMG), NOW)
    assert decision.state == target
    assert decision.status.resume_state == resume
    assert decision.status.error.reason == reason


def test_fixed_credentials_take_a_provisioned_node_back_where_it_was():
    current = status(S.PROVISIONED, image=IMG)
    broken = step(Desired(image=IMG), failed(A.POWER_ON, "AuthenticationFailed"), current, NOW)
    assert broken.state == S.REGISTRATION_ERROR
    retry = step(Desired(image=IMG), ok(ON), broken.status, NOW)
    assert retry.state == S.REGISTERING
    back = step(Desired(image=IMG), ok(ON), retry.status, NOW)
    assert back.state == S.PROVISIONED and back.status.image == IMG and back.status.error_count == 0


def test_pause_and_unpause_keep_everything_else():
    current = status(S.PROVISIONING, image=IMG, attempt=2, phase="wait-callback", phase_since=ago(5), resume_state=None)
    paused = step(Desired(image=IMG, paused=True), ok(ON), current, NOW)
    assert paused.state == S.PAUSED and paused.actions == ()
    again = step(Desired(image=IMG, paused=True), ok(OFF), paused.status, NOW)
    assert again.history is None and again.status == paused.status  # no churn while paused
    resumed = step(Desired(image=IMG), ok(ON), paused.status, NOW)
    assert resumed.state == S.PROVISIONING
    assert (resumed.status.attempt, resumed.status.phase) == (2, "wait-callback")


def test_detach_then_attach_re_registers_and_resumes():
    current = status(S.PROVISIONED, image=IMG)
    detached = step(Desired(image=IMG, detached=True), ok(ON), current, NOW)
    assert detached.state == S.DETACHED and detached.status.resume_state == S.PROVISIONED
    attached = step(Desired(image=IMG), Observed(), detached.status, NOW)
    assert attached.state == S.REGISTERING
    validating = step(Desired(image=IMG), Observed(), attached.status, NOW)
    assert validating.action_types == (A.VALIDATE_BMC,)
    resumed = step(Desired(image=IMG), ok(ON), validating.status, NOW)
    assert resumed.state == S.PROVISIONED and resumed.status.resume_state is None


def test_an_unchanged_world_writes_an_unchanged_status():
    current = status(S.PROVISIONED, image=IMG, power=ON)
    decision = step(Desired(image=IMG), ok(ON), current, NOW)
    assert decision.history is None and decision.actions == ()
    assert decision.status == current


def test_consumer_changes_are_recorded():
    decision = step(Desired(consumer="cluster-a/worker-3"), ok(ON), status(S.AVAILABLE), NOW)
    assert decision.status.consumer == "cluster-a/worker-3"
    assert decision.history.event == "consumer" and "cluster-a/worker-3" in decision.history.message


def test_history_is_bounded():
    policy = Policy(history_limit=5)
    current = status(S.AVAILABLE)
    for n in range(12):
        current = step(Desired(reboot=Request(f"r{n}")), ok(ON), current, NOW + dt.timedelta(minutes=n), policy).status
    assert len(current.history) == 5
    assert [h.message for h in current.history][-1] == "reboot r11"


def test_status_round_trips_through_the_wire_format():
    decision = step(Desired(image=IMG), failed(A.PREPARE_BOOT, "BootServerError"), status(S.PROVISIONING, image=IMG, attempt=1, phase="boot", hardware={"cpu": {"count": 2}}), NOW)
    wire = decision.status.to_dict()
    assert wire["state"] == "provisioning-error" and wire["error"]["reason"] == "BootServerError"
    assert wire["history"][-1]["to"] == "provisioning-error"
    assert Status.from_dict(wire) == decision.status
    assert Status.from_dict(None) == Status()


def test_action_failure_from_a_driver_error():
    error = ipmi.AuthenticationFailed("power on on ipmi://10.0.0.1:623: authentication failed")
    failure = ActionFailure.of(Action(A.POWER_ON), error)
    assert failure == ActionFailure(A.POWER_ON, "AuthenticationFailed", error.message)
    assert failure.is_authentication and not failure.is_unreachable


def test_step_never_makes_an_unlisted_transition():
    """A random walk over many inputs: no TransitionError, sane requeues."""
    rng = random.Random(1234)
    images = [None, IMG, IMG2]
    powers = [None, ON, OFF]
    visited: set[tuple[State, State]] = set()
    for _ in range(300):
        current = Status()
        now = NOW
        for _ in range(40):
            desired = Desired(
                online=rng.random() < 0.7,
                image=rng.choice(images),
                detached=rng.random() < 0.05,
                paused=rng.random() < 0.05,
                deleting=rng.random() < 0.03,
                reboot=Request(f"b{rng.randint(0, 3)}", rng.choice(["hard", "soft"])) if rng.random() < 0.2 else None,
                reinspect=Request(f"i{rng.randint(0, 3)}") if rng.random() < 0.1 else None,
            )
            failure = None
            if rng.random() < 0.1:
                failure = ActionFailure(rng.choice(list(ActionType)), rng.choice(["BMCUnreachable", "AuthenticationFailed", "BMCCommandFailed"]), "x")
            observed = Observed(
                bmc_reachable=rng.choice([None, True, True, True, False]),
                credentials_ok=rng.choice([None, True, True, True, False]),
                power=rng.choice(powers),
                inspection={"cpu": {}} if rng.random() < 0.3 else None,
                boot_callback=BootCallback(current.attempt, rng.random() < 0.8) if rng.random() < 0.3 else None,
                failure=failure,
            )
            decision = step(desired, observed, current, now)
            assert decision.requeue_after is None or decision.requeue_after >= 0
            if current.state is not None:
                visited.add((current.state, decision.state))
            current = decision.status
            now += dt.timedelta(seconds=rng.choice([0, 5, 30, 700, 4000]))
    states_reached = {b for _, b in visited}
    assert {S.AVAILABLE, S.PROVISIONED, S.DELETED, S.PAUSED, S.DETACHED} <= states_reached


# ---------------------------------------------------------------------------------------
# A whole life, driven like a controller against the in-memory BMC
# ---------------------------------------------------------------------------------------


class MiniController:
    """The loop from the module docstring, with the fake BMC and a fake boot server."""

    def __init__(self, fleet: FakeBmcFleet, address: str, password: str = "pw"):
        self.client = fleet.client(address, ipmi.BmcCredentials("admin", password))
        self.host = fleet.host(address)
        self.boot_configs: dict[int, str] = {}
        self.callback: BootCallback | None = None
        self.now = NOW

    async def _run(self, action: Action) -> Observed:
        if action.type == A.VALIDATE_BMC:
            await self.client.validate()
            return Observed(bmc_reachable=True, credentials_ok=True, power=Power((await self.client.power_state()).value))
        if action.type == A.INSPECT:
            return Observed(inspection=(await self.client.inspect()).to_dict())
        if action.type == A.SET_BOOT_DEVICE:
            await self.client.set_boot_device(action.device, persistent=action.persistent)
        elif action.type == A.POWER_ON:
            await self.client.power_on()
        elif action.type == A.POWER_OFF:
            await self.client.power_off()
        elif action.type == A.SOFT_OFF:
            await self.client.soft_off()
        elif action.type == A.REBOOT:
            await self.client.reset()
        elif action.type == A.PREPARE_BOOT:
            self.boot_configs[action.attempt] = action.image
        elif action.type == A.CLEAR_BOOT:
            self.boot_configs.clear()
        return Observed()

    async def reconcile(self, desired: Desired, current: Status) -> Status:
        for _ in range(10):  # follow immediate requeues within one test step
            try:
                power = Power((await self.client.power_state()).value)
                seen = Observed(power=power, boot_callback=self.callback)
            except ipmi.AuthenticationFailed as error:
                seen = Observed(bmc_reachable=True, credentials_ok=False, message=error.message)
            except ipmi.BmcError as error:
                seen = Observed(bmc_reachable=False, message=error.message)
            decision = step(desired, seen, current, self.now)
            extra = Observed()
            for action in decision.actions:
                try:
                    extra = await self._run(action)
                except ipmi.BmcError as error:
                    decision = step(desired, dataclasses.replace(seen, failure=ActionFailure.of(action, error)), decision.status, self.now)
                    break
                if extra.inspection is not None or extra.bmc_reachable:
                    decision = step(desired, dataclasses.replace(seen, **{k: v for k, v in dataclasses.asdict(extra).items() if v not in (None, "")}), decision.status, self.now)
            # a machine PXE-booting the prepared image calls back (the boot server's part)
            if self.host.power == ipmi.PowerState.ON and self.host.boot_device == ipmi.BootDevice.NETWORK and self.boot_configs:
                self.callback = BootCallback(max(self.boot_configs))
            current = decision.status
            if decision.requeue_after != 0:
                break
        self.now += dt.timedelta(seconds=10)
        return current


def test_a_whole_life_against_the_fake_bmc():
    fleet = FakeBmcFleet()
    host = fleet.add("ipmi://10.0.0.21", username="admin", password="pw")
    ctl = MiniController(fleet, "ipmi://10.0.0.21")

    async def life():
        st = Status()
        trail = []
        for desired in [Desired(online=False)] * 4 + [Desired(image=IMG)] * 5 + [Desired(image=None)] * 4 + [Desired(deleting=True)] * 3:
            st = await ctl.reconcile(desired, st)
            trail.append(st.state)
        return st, trail

    st, trail = asyncio.run(life())
    assert S.AVAILABLE in trail and S.PROVISIONED in trail
    assert trail.index(S.AVAILABLE) < trail.index(S.PROVISIONED)
    assert st.state == S.DELETED
    assert host.power == ipmi.PowerState.OFF
    assert host.boot_device == ipmi.BootDevice.DISK  # set persistent when provisioned
    assert st.hardware and st.hardware["memory"]["totalMiB"] == 65536
    events = [h.event for h in st.history]
    for expected in ("registered", "inspected", "provision", "boot", "provisioned", "deprovision", "deprovisioned", "deleted"):
        assert expected in events, (expected, events)
    assert all(h.at.endswith("Z") for h in st.history)
    assert "power_on" in host.calls and "inspect" in host.calls


def test_a_bmc_outage_is_a_power_management_error_and_recovers():
    fleet = FakeBmcFleet()
    host = fleet.add("ipmi://10.0.0.22", username="admin", password="pw")
    ctl = MiniController(fleet, "ipmi://10.0.0.22")

    async def scenario():
        st = Status()
        for _ in range(4):
            st = await ctl.reconcile(Desired(), st)
        assert st.state == S.AVAILABLE and host.power == ipmi.PowerState.ON
        host.reachable = False
        st = await ctl.reconcile(Desired(), st)
        assert st.state == S.POWER_MANAGEMENT_ERROR and st.error.reason == "BMCUnreachable"
        host.reachable = True
        ctl.now += dt.timedelta(seconds=60)  # past the backoff
        st = await ctl.reconcile(Desired(), st)
        return st

    st = asyncio.run(scenario())
    assert st.state == S.AVAILABLE and st.error_count == 0


def test_wrong_credentials_park_the_node_in_registration_error():
    fleet = FakeBmcFleet()
    fleet.add("ipmi://10.0.0.23", username="admin", password="right")
    ctl = MiniController(fleet, "ipmi://10.0.0.23", password="wrong")

    async def scenario():
        st = Status()
        for _ in range(3):
            st = await ctl.reconcile(Desired(), st)
        return st

    st = asyncio.run(scenario())
    assert st.state == S.REGISTRATION_ERROR
    assert st.error.reason == "AuthenticationFailed"
    assert "authentication failed" in st.error.message


def test_actions_render_readably():
    assert str(Action(A.SET_BOOT_DEVICE, device="disk", persistent=True)) == "set-boot-device(device=disk, persistent)"
    assert str(Action(A.PREPARE_BOOT, image=IMG, attempt=2)) == f"prepare-boot(image={IMG}, attempt=2)"
