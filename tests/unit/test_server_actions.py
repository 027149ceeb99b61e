"""The Server's reboot/rebuild state machine (core.server_actions), transition by
transition, and the per-key locks that replaced the never-pruned lock dictionaries."""

from __future__ import annotations

import threading
import time

import pytest

from stratus.core import server_actions as sa
from stratus.core.locks import KeyedLocks
from stratus.core.server_actions import NOTHING, REBOOT_STOPPING, REBUILD_STOPPING, UNCHANGED, Effect

REFUSED = "Reboot needs an ACTIVE server; it is {}. The request was dropped: annotate again once it is ACTIVE"


@pytest.mark.parametrize(
    "value, phase, soft_supported, effect, annotation, event",
    [
        pytest.param(None, "ACTIVE", True, Effect.NONE, UNCHANGED, None, id="no-request"),
        pytest.param(REBOOT_STOPPING, "ACTIVE", True, Effect.NONE, UNCHANGED, None, id="reboot-in-progress"),
        pytest.param(REBUILD_STOPPING, "SHUTOFF", True, Effect.NONE, UNCHANGED, None, id="rebuild-in-progress"),
        pytest.param("warm", "ACTIVE", True, Effect.NONE, UNCHANGED, None, id="unknown-kind-ignored"),
        pytest.param("hard", "BUILD", False, Effect.NONE, None, ("Warning", "RebootRefused", REFUSED.format("BUILD")),
                     id="hard-refused-while-building"),
        pytest.param("soft", None, True, Effect.NONE, None, ("Warning", "RebootRefused", REFUSED.format(None)),
                     id="soft-refused-without-phase"),
        pytest.param("soft", "ACTIVE", True, Effect.SOFT_REBOOT, None,
                     ("Normal", "Rebooting", "Asked the guest to reboot (soft)"), id="soft-where-served"),
        pytest.param("soft", "PAUSED", False, Effect.STOP, REBOOT_STOPPING,
                     ("Normal", "Rebooting", "Rebooting (soft): stopping the virtual machine, then starting it"),
                     id="soft-falls-back-to-stop"),
        pytest.param("hard", "ACTIVE", True, Effect.STOP, REBOOT_STOPPING,
                     ("Normal", "Rebooting", "Rebooting (hard): stopping the virtual machine, then starting it"),
                     id="hard-stops"),
    ],
)
def test_reboot_request(value, phase, soft_supported, effect, annotation, event):
    step = sa.on_reboot_request(value, phase, soft_supported)
    assert (step.effect, step.annotation, step.event) == (effect, annotation, event)


@pytest.mark.parametrize(
    "annotation, vmi_present, expected",
    [
        pytest.param(None, False, NOTHING, id="nothing-running"),
        pytest.param("hard", False, NOTHING, id="request-not-taken-yet"),
        pytest.param(REBOOT_STOPPING, True, NOTHING, id="reboot-waits-for-vmi-to-go"),
        pytest.param(REBOOT_STOPPING, False, sa.Step(Effect.START, None, (
            "Normal", "Rebooted", "The virtual machine was stopped; starting it again")), id="reboot-finishes"),
        pytest.param(REBUILD_STOPPING, False, sa.Step(Effect.START, None, (
            "Normal", "Rebuilt", "The virtual machine was stopped; starting it again from its new root disk")),
                     id="rebuild-finishes"),
    ],
)
def test_vm_observed(annotation, vmi_present, expected):
    assert sa.on_vm_observed(annotation, vmi_present) == expected


REBUILDING = sa.Step(Effect.STOP, REBUILD_STOPPING,
                     ("Normal", "Rebuilding", "Rebuilding from image 'fedora': stopping the virtual machine"))


@pytest.mark.parametrize(
    "annotation, current, wanted, power, expected",
    [
        pytest.param(None, "", "web-root-fedora", "Running", NOTHING, id="first-boot"),
        pytest.param(None, "web-root-fedora", "web-root-fedora", "Running", NOTHING, id="same-image"),
        pytest.param(None, "web-root-cirros", "web-root-fedora", "Running", REBUILDING, id="new-image-rebuilds"),
        pytest.param(None, "web-root-cirros", "web-root-fedora", "Paused", REBUILDING, id="paused-rebuilds"),
        pytest.param(None, "web-root-cirros", "web-root-fedora", "Stopped", NOTHING, id="stopped-needs-no-restart"),
        pytest.param(REBOOT_STOPPING, "web-root-cirros", "web-root-fedora", "Running", NOTHING, id="reboot-running"),
        pytest.param("hard", "web-root-cirros", "web-root-fedora", "Running", NOTHING, id="request-pending"),
    ],
)
def test_sync_detects_rebuild(annotation, current, wanted, power, expected):
    assert sa.on_sync(annotation, current, wanted, power, "fedora") == expected


@pytest.mark.parametrize(
    "annotation, action, halted",
    [(None, "", False), ("soft", "", False), ("hard", "", False), (REBOOT_STOPPING, "reboot", True),
     (REBUILD_STOPPING, "rebuild", True)],
)
def test_action_and_halt(annotation, action, halted):
    assert (sa.action_of(annotation), sa.halted(annotation)) == (action, halted)


@pytest.mark.parametrize("phase, allowed", [("ACTIVE", True), ("PAUSED", True), ("BUILD", False), ("ERROR", False),
                                            (None, False)])
def test_actions_need_an_active_server(phase, allowed):
    assert sa.can_act(phase) is allowed


def test_migration_refusal_names_the_phase():
    assert sa.refusal("Migration", "SHUTOFF") == (
        "Warning", "MigrationRefused",
        "Live migration needs an ACTIVE server; it is SHUTOFF. The request was dropped: annotate again once it is ACTIVE")


# -- KeyedLocks ------------------------------------------------------------------------------


def test_locks_are_dropped_when_released():
    locks = KeyedLocks()
    for i in range(1000):
        with locks[("ns", f"server-{i}")]:
            assert len(locks) == 1
    assert len(locks) == 0


def test_lock_is_dropped_after_an_exception():
    locks = KeyedLocks()
    with pytest.raises(RuntimeError):
        with locks["a"]:
            raise RuntimeError("boom")
    assert len(locks) == 0


def test_reentrant_locks_nest():
    locks = KeyedLocks(threading.RLock)
    with locks["a"]:
        with locks["a"]:
            assert len(locks) == 1
        assert len(locks) == 1
    assert len(locks) == 0


def test_same_key_excludes_other_keys_do_not():
    locks = KeyedLocks()
    inside = 0
    most = 0
    guard = threading.Lock()
    other_done = threading.Event()

    def worker(key):
        nonlocal inside, most
        with locks[key]:
            with guard:
                inside += 1
                most = max(most, inside)
            time.sleep(0.01)
            with guard:
                inside -= 1

    threads = [threading.Thread(target=worker, args=("same",)) for _ in range(8)]
    for t in threads:
        t.start()
    # Another key is not held up by the busy one.
    def other():
        with locks["other"]:
            other_done.set()

    threading.Thread(target=other).start()
    assert other_done.wait(5)
    for t in threads:
        t.join(10)
    assert most == 1
    assert len(locks) == 0


def test_waiters_keep_the_lock_alive_until_the_last_leaves():
    locks = KeyedLocks()
    held = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first():
        with locks["k"]:
            held.set()
            release.wait(5)
            order.append("first")

    def second():
        with locks["k"]:
            order.append("second")

    a = threading.Thread(target=first)
    a.start()
    assert held.wait(5)
    b = threading.Thread(target=second)
    b.start()
    deadline = time.monotonic() + 5
    while locks._entries["k"].users < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(locks) == 1
    release.set()
    a.join(5)
    b.join(5)
    assert order == ["first", "second"]
    assert len(locks) == 0
