"""The BareMetalNode provisioning state machine: a pure function from (desired, observed, status) to a decision.

Nothing here does I/O or reads the clock: the controller passes ``now`` and the world it
observed, runs the :class:`Action` s of the returned :class:`Decision`, writes
``decision.status`` and requeues after ``decision.requeue_after`` seconds.

States (metal3's host state machine, Ironic's names where they differ)::

    registering ──► inspecting ──► available ──► provisioning ──► provisioned
         ▲                            ▲  │                              │
         │                            │  └── (re-inspect) ──► inspecting│
         │                            └──────── deprovisioning ◄────────┘
         │
    detached / paused (from any state, by annotation; back where they were)
    deleting ──► deleted (after deprovisioning when needed)
    registration-error, inspection-error, provisioning-error, deprovisioning-error,
    power-management-error: retried with exponential backoff

One step
========

:func:`step` looks up the handler of the current state in :data:`HANDLERS` (an explicit
table, one function per state) after three checks that apply in every state, in this order:

1. ``paused`` (annotation): go to ``paused`` and do nothing at all until it is removed,
   then return to the state it interrupted.
2. ``detached`` (annotation): go to ``detached``; no BMC action; deleting a detached
   node does not touch the machine. When the annotation goes, the node re-registers
   (validates the BMC) and returns to the state it was in.
3. ``observed.failure``: an action of the previous decision failed: enter the error state
   for that action and state (table in :func:`_failure_target`).

Every transition the handlers can make is listed in :data:`ALLOWED`; :func:`step` refuses
any other (a bug, never user input), and the unit tests walk the table.

The controller's loop
=====================

::

    decision = step(desired, observed, status, now)
    for action in decision.actions:          # in order; stop at the first failure
        try: run(action)
        except BmcError as err:
            decision = step(desired, replace(observed, failure=ActionFailure.of(action, err)),
                            decision.status, now)
            break
    write(decision.status); requeue after decision.requeue_after (None: wait for a change)

``Observed`` is what the controller saw in this reconcile, not history: the power state it
just read (None if it did not ask), whether the BMC answered and took the credentials,
the inspection result if it ran an ``inspect`` action now, the boot callback the boot
server recorded for this node (matched to the provisioning attempt it was issued for).

Decisions worth knowing
=======================

* Provisioning is three phases kept in ``status.phase``: ``boot`` (write the PXE config
  for the image and this attempt, boot device network, power on or reboot), then
  ``wait-callback`` (the installer calls the boot server when the image is written; its
  attempt number must match, so a late callback from an earlier attempt is ignored),
  then provisioned (boot device disk, persistent; PXE config removed; reboot into the
  image if ``online``, else power off). No callback within ``deploy_timeout`` is a
  provisioning error.
* Changing or removing the image of a provisioned node deprovisions it first (power
  off, PXE config removed), then provisions the new image from ``available``.
* Power follows ``spec.online`` in ``available`` and ``provisioned`` only; the other
  states own the power themselves. Power-off is a hard power off.
* A reboot request (annotation with an id) is honoured once per id in the steady
  states: a running host is reset (``hard``) or soft-powered-off then powered on
  (``soft``, falling back to a hard power off after ``soft_reboot_timeout``); a host
  that is off and should be online is powered on; an offline host just records it.
* A re-inspection request (annotation with an id) is honoured once per id in
  ``available`` (an ``inspection-error`` retries anyway).
* Errors: the count grows with each failure of the same operation and resets when a
  steady state is reached; the next try waits ``backoff_base * 2**(count-1)`` seconds,
  at most ``backoff_max``. A node in ``registration-error`` whose BMC the controller
  sees working again (credentials fixed) re-registers without waiting out the backoff.
  A failure that is an authentication failure sends any state to ``registration-error``
  (and back to where it was once fixed), as metal3 does.
* Deleting: a provisioned (or provisioning) node is deprovisioned first; then the
  machine is powered off and the node reaches ``deleted`` (the finalizer may go). A
  BMC that is unreachable or refuses the credentials does not block deletion (the
  history says so); a node that never registered is deleted without BMC contact.
* History: every decision that changes the state or runs actions carries a
  :class:`HistoryEntry` (time, from, to, event, message, actions); ``status.history``
  keeps the last ``history_limit`` of them. A decision that changes nothing has none,
  so an unchanged world writes an unchanged status.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Callable, Mapping
from typing import Any


class State(str, enum.Enum):
    REGISTERING = "registering"
    INSPECTING = "inspecting"
    AVAILABLE = "available"
    PROVISIONING = "provisioning"
    PROVISIONED = "provisioned"
    DEPROVISIONING = "deprovisioning"
    REGISTRATION_ERROR = "registration-error"
    INSPECTION_ERROR = "inspection-error"
    PROVISIONING_ERROR = "provisioning-error"
    DEPROVISIONING_ERROR = "deprovisioning-error"
    POWER_MANAGEMENT_ERROR = "power-management-error"
    DETACHED = "detached"
    PAUSED = "paused"
    DELETING = "deleting"
    DELETED = "deleted"

    @property
    def is_error(self) -> bool:
        return self in ERROR_STATES

    @property
    def is_steady(self) -> bool:
        return self in (State.AVAILABLE, State.PROVISIONED)


ERROR_STATES = frozenset(
    {
        State.REGISTRATION_ERROR,
        State.INSPECTION_ERROR,
        State.PROVISIONING_ERROR,
        State.DEPROVISIONING_ERROR,
        State.POWER_MANAGEMENT_ERROR,
    }
)


class ActionType(str, enum.Enum):
    VALIDATE_BMC = "validate-bmc"  # log in, read identity and power
    INSPECT = "inspect"
    SET_BOOT_DEVICE = "set-boot-device"  # device, persistent
    POWER_ON = "power-on"
    POWER_OFF = "power-off"  # hard
    SOFT_OFF = "soft-off"
    REBOOT = "reboot"  # hard reset
    PREPARE_BOOT = "prepare-boot"  # publish the PXE/iPXE config for image and attempt
    CLEAR_BOOT = "clear-boot"  # remove this node's PXE config


POWER_ACTIONS = frozenset({ActionType.POWER_ON, ActionType.POWER_OFF, ActionType.SOFT_OFF, ActionType.REBOOT})


@dataclasses.dataclass(frozen=True)
class Action:
    type: ActionType
    device: str | None = None  # SET_BOOT_DEVICE: network | disk
    persistent: bool = False
    image: str | None = None  # PREPARE_BOOT
    attempt: int | None = None  # PREPARE_BOOT: the provisioning attempt the callback must name

    def __str__(self) -> str:
        extra = [f"{k}={v}" for k, v in (("device", self.device), ("image", self.image), ("attempt", self.attempt)) if v is not None]
        if self.persistent:
            extra.append("persistent")
        return self.type.value + (f"({', '.join(extra)})" if extra else "")


class Power(str, enum.Enum):
    ON = "on"
    OFF = "off"


@dataclasses.dataclass(frozen=True)
class Request:
    """An annotation-borne request honoured once per id (reboot: mode hard|soft)."""

    id: str
    mode: str = "hard"


@dataclasses.dataclass(frozen=True)
class Desired:
    """What the user asked for (spec and annotations)."""

    online: bool = True
    image: str | None = None
    consumer: str | None = None
    inspect: bool = True  # False: skip inspection (registering -> available)
    detached: bool = False
    paused: bool = False
    deleting: bool = False
    reboot: Request | None = None
    reinspect: Request | None = None


@dataclasses.dataclass(frozen=True)
class BootCallback:
    """What the installer reported to the boot server for one provisioning attempt."""

    attempt: int
    success: bool = True
    message: str = ""


@dataclasses.dataclass(frozen=True)
class ActionFailure:
    """An action that failed; ``reason`` is the driver error's CamelCase reason."""

    action: ActionType
    reason: str
    message: str

    @classmethod
    def of(cls, action: Action | ActionType, error: BaseException) -> ActionFailure:
        kind = action.type if isinstance(action, Action) else action
        return cls(kind, getattr(error, "reason", type(error).__name__), getattr(error, "message", str(error)))

    @property
    def is_authentication(self) -> bool:
        return self.reason == "AuthenticationFailed"

    @property
    def is_unreachable(self) -> bool:
        return self.reason == "BMCUnreachable"


@dataclasses.dataclass(frozen=True)
class Observed:
    """What the controller saw in this reconcile (None: not looked at)."""

    bmc_reachable: bool | None = None
    credentials_ok: bool | None = None
    power: Power | None = None
    inspection: Mapping[str, Any] | None = None
    boot_callback: BootCallback | None = None
    failure: ActionFailure | None = None
    message: str = ""  # the driver's message when the BMC did not answer / refused


@dataclasses.dataclass(frozen=True)
class ErrorInfo:
    state: State
    reason: str
    message: str
    at: str


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    at: str
    from_state: State | None
    to_state: State
    event: str
    message: str = ""
    actions: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {"at": self.at, "from": self.from_state.value if self.from_state else None, "to": self.to_state.value, "event": self.event}
        if self.message:
            out["message"] = self.message
        if self.actions:
            out["actions"] = list(self.actions)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HistoryEntry:
        return cls(
            at=d["at"],
            from_state=State(d["from"]) if d.get("from") else None,
            to_state=State(d["to"]),
            event=d.get("event", ""),
            message=d.get("message", ""),
            actions=tuple(d.get("actions", ())),
        )


@dataclasses.dataclass(frozen=True)
class Status:
    """The machine's memory, kept in the object's status between reconciles."""

    state: State | None = None
    state_since: str | None = None
    resume_state: State | None = None  # where detach (via re-registration) and errors return to
    paused_state: State | None = None  # the state a pause interrupted
    registered: bool = False
    error: ErrorInfo | None = None
    error_count: int = 0
    power: Power | None = None
    hardware: Mapping[str, Any] | None = None
    image: str | None = None  # provisioned, or being provisioned
    attempt: int = 0  # provisioning attempts so far
    phase: str | None = None  # sub-step of provisioning, deprovisioning, soft reboot
    phase_since: str | None = None
    consumer: str | None = None
    handled_reboot: str | None = None
    handled_reinspect: str | None = None
    history: tuple[HistoryEntry, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """camelCase, JSON-safe, for the status subresource."""
        out: dict[str, Any] = {
            "state": self.state.value if self.state else None,
            "stateSince": self.state_since,
            "resumeState": self.resume_state.value if self.resume_state else None,
            "pausedState": self.paused_state.value if self.paused_state else None,
            "registered": self.registered,
            "errorCount": self.error_count,
            "power": self.power.value if self.power else None,
            "hardware": dict(self.hardware) if self.hardware is not None else None,
            "image": self.image,
            "attempt": self.attempt,
            "phase": self.phase,
            "phaseSince": self.phase_since,
            "consumer": self.consumer,
            "handledReboot": self.handled_reboot,
            "handledReinspect": self.handled_reinspect,
            "history": [h.to_dict() for h in self.history],
        }
        if self.error:
            out["error"] = {"state": self.error.state.value, "reason": self.error.reason, "message": self.error.message, "at": self.error.at}
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Status:
        d = d or {}
        err = d.get("error")
        return cls(
            state=State(d["state"]) if d.get("state") else None,
            state_since=d.get("stateSince"),
            resume_state=State(d["resumeState"]) if d.get("resumeState") else None,
            paused_state=State(d["pausedState"]) if d.get("pausedState") else None,
            registered=bool(d.get("registered", False)),
            error=ErrorInfo(State(err["state"]), err.get("reason", ""), err.get("message", ""), err["at"]) if err else None,
            error_count=int(d.get("errorCount", 0)),
            power=Power(d["power"]) if d.get("power") else None,
            hardware=d.get("hardware"),
            image=d.get("image"),
            attempt=int(d.get("attempt", 0)),
            phase=d.get("phase"),
            phase_since=d.get("phaseSince"),
            consumer=d.get("consumer"),
            handled_reboot=d.get("handledReboot"),
            handled_reinspect=d.get("handledReinspect"),
            history=tuple(HistoryEntry.from_dict(h) for h in d.get("history", ())),
        )


@dataclasses.dataclass(frozen=True)
class Policy:
    backoff_base: float = 10.0
    backoff_max: float = 600.0
    poll_interval: float = 5.0  # while waiting for something to happen
    resync_interval: float = 300.0  # steady states: re-check power drift
    deploy_timeout: float = 1800.0
    deprovision_timeout: float = 600.0
    soft_reboot_timeout: float = 120.0
    history_limit: int = 20

    def backoff(self, count: int) -> float:
        return min(self.backoff_max, self.backoff_base * 2 ** max(count - 1, 0))


@dataclasses.dataclass(frozen=True)
class Decision:
    state: State
    status: Status
    actions: tuple[Action, ...] = ()
    requeue_after: float | None = None
    history: HistoryEntry | None = None

    @property
    def action_types(self) -> tuple[ActionType, ...]:
        return tuple(a.type for a in self.actions)


# --------------------------------------------------------------------------------------------
# The transition table
# --------------------------------------------------------------------------------------------

_EVERYWHERE = {State.PAUSED, State.DETACHED, State.REGISTRATION_ERROR}
ALLOWED: dict[State, frozenset[State]] = {
    State.REGISTERING: frozenset({State.INSPECTING, State.AVAILABLE, State.DELETED, State.DELETING} | _EVERYWHERE | {
        # back to where a detach, pause or error interrupted
        State.PROVISIONED, State.PROVISIONING, State.DEPROVISIONING, State.INSPECTION_ERROR,
        State.PROVISIONING_ERROR, State.DEPROVISIONING_ERROR, State.POWER_MANAGEMENT_ERROR,
    }),
    State.INSPECTING: frozenset({State.AVAILABLE, State.INSPECTION_ERROR, State.DELETING} | _EVERYWHERE),
    State.AVAILABLE: frozenset({State.INSPECTING, State.PROVISIONING, State.DELETING, State.POWER_MANAGEMENT_ERROR} | _EVERYWHERE),
    State.PROVISIONING: frozenset({State.PROVISIONED, State.PROVISIONING_ERROR, State.DEPROVISIONING} | _EVERYWHERE),
    State.PROVISIONED: frozenset({State.DEPROVISIONING, State.POWER_MANAGEMENT_ERROR} | _EVERYWHERE),
    State.DEPROVISIONING: frozenset({State.AVAILABLE, State.DELETING, State.DEPROVISIONING_ERROR} | _EVERYWHERE),
    State.REGISTRATION_ERROR: frozenset({State.REGISTERING, State.DELETING, State.DELETED, State.PAUSED, State.DETACHED}),
    State.INSPECTION_ERROR: frozenset({State.INSPECTING, State.DELETING} | _EVERYWHERE),
    State.PROVISIONING_ERROR: frozenset({State.PROVISIONING, State.DEPROVISIONING} | _EVERYWHERE),
    State.DEPROVISIONING_ERROR: frozenset({State.DEPROVISIONING} | _EVERYWHERE),
    State.POWER_MANAGEMENT_ERROR: frozenset(
        {State.AVAILABLE, State.PROVISIONED, State.DELETING, State.DEPROVISIONING, State.DELETED} | _EVERYWHERE
    ),
    State.DETACHED: frozenset({State.REGISTERING, State.DELETED, State.PAUSED}),
    State.PAUSED: frozenset(set(State) - {State.PAUSED}),  # back to whatever it interrupted
    State.DELETING: frozenset({State.DELETED, State.POWER_MANAGEMENT_ERROR} | _EVERYWHERE),
    State.DELETED: frozenset({State.PAUSED, State.DETACHED}),
}


class TransitionError(RuntimeError):
    """A handler produced a transition missing from ALLOWED: a bug in this module."""


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _iso(now: datetime.datetime) -> str:
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.timezone.utc)
    return now.astimezone(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _parse(ts: str | None) -> datetime.datetime | None:
    if not ts:
        return None
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _elapsed(since: str | None, now: datetime.datetime) -> float:
    start = _parse(since)
    if start is None:
        return 0.0
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.timezone.utc)
    return (now - start).total_seconds()


@dataclasses.dataclass
class _Ctx:
    desired: Desired
    observed: Observed
    status: Status
    now: datetime.datetime
    policy: Policy

    @property
    def state(self) -> State:
        assert self.status.state is not None
        return self.status.state

    @property
    def at(self) -> str:
        return _iso(self.now)

    def go(
        self,
        to: State,
        event: str,
        message: str = "",
        actions: tuple[Action, ...] = (),
        requeue: float | None = 0.0,
        **changes: Any,
    ) -> Decision:
        """A transition (or, with to == current state, actions without one)."""
        status = self.status
        if to != status.state:
            changes.setdefault("state_since", self.at)
            if to.is_steady:
                changes.setdefault("error", None)
                changes.setdefault("error_count", 0)
        status = dataclasses.replace(status, state=to, **changes)
        return _finish(self, status, actions, requeue, event, message)

    def stay(self, requeue: float | None, actions: tuple[Action, ...] = (), event: str = "", message: str = "", **changes: Any) -> Decision:
        status = dataclasses.replace(self.status, **changes)
        return _finish(self, status, actions, requeue, event, message)

    def fail(self, to: State, reason: str, message: str, resume: State | None = None, **changes: Any) -> Decision:
        count = self.status.error_count + 1
        error = ErrorInfo(to, reason, message, self.at)
        delay = self.policy.backoff(count)
        return self.go(
            to,
            "error",
            f"{reason}: {message}" if message else reason,
            requeue=delay,
            error=error,
            error_count=count,
            resume_state=resume if resume is not None else self.status.resume_state,
            **changes,
        )


def _finish(ctx: _Ctx, status: Status, actions: tuple[Action, ...], requeue: float | None, event: str, message: str) -> Decision:
    previous = ctx.status.state
    frozen = status.state in (State.PAUSED, State.DETACHED)  # nothing is recorded while paused/detached
    if ctx.observed.power is not None and not frozen:
        status = dataclasses.replace(status, power=ctx.observed.power)
    if ctx.desired.consumer != status.consumer and not frozen:
        status = dataclasses.replace(status, consumer=ctx.desired.consumer)
        if not event:
            event, message = "consumer", f"claimed by {ctx.desired.consumer}" if ctx.desired.consumer else "released"
    entry = None
    if status.state != previous or actions or event:
        entry = HistoryEntry(
            at=ctx.at,
            from_state=previous,
            to_state=status.state,  # type: ignore[arg-type]
            event=event or "transition",
            message=message,
            actions=tuple(str(a) for a in actions),
        )
        history = (status.history + (entry,))[-ctx.policy.history_limit :]
        status = dataclasses.replace(status, history=history)
    return Decision(status.state, status, tuple(actions), requeue, entry)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Handlers, one per state
# --------------------------------------------------------------------------------------------


def _registering(c: _Ctx) -> Decision:
    if c.desired.deleting and not c.status.registered:
        return c.go(State.DELETED, "deleted", "never registered: no BMC action needed", requeue=None)
    o = c.observed
    if o.credentials_ok is False:
        return c.fail(State.REGISTRATION_ERROR, "AuthenticationFailed", o.message or "the BMC rejected the credentials")
    if o.bmc_reachable is False:
        return c.fail(State.REGISTRATION_ERROR, "BMCUnreachable", o.message or "the BMC does not answer")
    if o.bmc_reachable and o.credentials_ok:
        target = c.status.resume_state
        if c.desired.deleting:
            target = State.DELETING
        elif target is None or target in (State.REGISTERING, State.REGISTRATION_ERROR):
            target = State.INSPECTING if c.desired.inspect else State.AVAILABLE
        return c.go(target, "registered", "BMC address and credentials validated", registered=True, resume_state=None, error=None, error_count=0, phase=None if target != c.status.resume_state else c.status.phase)
    return c.stay(c.policy.poll_interval, (Action(ActionType.VALIDATE_BMC),), "validate", "checking the BMC address and credentials")


def _inspecting(c: _Ctx) -> Decision:
    if c.desired.deleting:
        return c.go(State.DELETING, "delete", "deletion requested")
    if c.observed.inspection is not None:
        return c.go(
            State.AVAILABLE,
            "inspected",
            "hardware inventory recorded",
            hardware=dict(c.observed.inspection),
            handled_reinspect=c.desired.reinspect.id if c.desired.reinspect else c.status.handled_reinspect,
        )
    return c.stay(c.policy.poll_interval, (Action(ActionType.INSPECT),), "inspect", "reading the hardware inventory")


def _steady_power(c: _Ctx) -> Decision:
    """Power in available/provisioned: reboot requests, soft-reboot progress, spec.online."""
    d, o, s, p = c.desired, c.observed, c.status, c.policy
    if o.credentials_ok is False:
        return c.fail(State.REGISTRATION_ERROR, "AuthenticationFailed", o.message or "the BMC rejected the credentials", resume=c.state)
    if o.bmc_reachable is False:
        return c.fail(State.POWER_MANAGEMENT_ERROR, "BMCUnreachable", o.message or "the BMC does not answer", resume=c.state)
    if s.phase == "reboot-soft-off":
        if o.power == Power.OFF:
            if d.online:
                return c.stay(p.poll_interval, (Action(ActionType.POWER_ON),), "reboot", "soft reboot: powering on", phase=None, phase_since=None)
            return c.stay(p.resync_interval, event="reboot", message="soft reboot: host stays off (offline)", phase=None, phase_since=None)
        if _elapsed(s.phase_since, c.now) > p.soft_reboot_timeout:
            return c.stay(p.poll_interval, (Action(ActionType.POWER_OFF),), "reboot", "soft reboot: the OS did not shut down in time, powering off")
        return c.stay(p.poll_interval)
    if d.reboot is not None and d.reboot.id != s.handled_reboot:
        if not d.online:
            return c.stay(p.resync_interval, event="reboot", message=f"reboot {d.reboot.id} ignored: host is offline", handled_reboot=d.reboot.id)
        if o.power == Power.OFF:
            return c.stay(p.poll_interval, (Action(ActionType.POWER_ON),), "reboot", f"reboot {d.reboot.id}: host was off, powering on", handled_reboot=d.reboot.id)
        if o.power is None:
            return c.stay(p.poll_interval)  # look at the power first
        if d.reboot.mode == "soft":
            return c.stay(
                p.poll_interval, (Action(ActionType.SOFT_OFF),), "reboot", f"reboot {d.reboot.id} (soft)",
                handled_reboot=d.reboot.id, phase="reboot-soft-off", phase_since=c.at,
            )
        return c.stay(p.poll_interval, (Action(ActionType.REBOOT),), "reboot", f"reboot {d.reboot.id}", handled_reboot=d.reboot.id)
    if o.power is None:
        return c.stay(p.poll_interval)
    if d.online and o.power == Power.OFF:
        return c.stay(p.poll_interval, (Action(ActionType.POWER_ON),), "power", "spec.online is true: powering on")
    if not d.online and o.power == Power.ON:
        return c.stay(p.poll_interval, (Action(ActionType.POWER_OFF),), "power", "spec.online is false: powering off")
    return c.stay(p.resync_interval)


def _available(c: _Ctx) -> Decision:
    d, s = c.desired, c.status
    if d.deleting:
        return c.go(State.DELETING, "delete", "deletion requested", phase=None)
    if s.phase is None and d.reinspect is not None and d.reinspect.id != s.handled_reinspect:
        return c.go(State.INSPECTING, "reinspect", f"re-inspection {d.reinspect.id} requested", handled_reinspect=d.reinspect.id)
    if s.phase is None and d.image:
        return c.go(
            State.PROVISIONING, "provision", f"provisioning image {d.image}",
            image=d.image, attempt=s.attempt + 1, phase="boot", phase_since=c.at, error_count=0, error=None,
        )
    return _steady_power(c)


def _provisioning(c: _Ctx) -> Decision:
    d, o, s, p = c.desired, c.observed, c.status, c.policy
    if d.deleting or not d.image or d.image != s.image:
        why = "deletion requested" if d.deleting else ("image removed" if not d.image else f"image changed to {d.image}")
        return c.go(State.DEPROVISIONING, "deprovision", f"provisioning aborted: {why}", phase="start", phase_since=c.at)
    if s.phase in (None, "boot"):
        power = Action(ActionType.REBOOT) if o.power == Power.ON else Action(ActionType.POWER_ON)
        actions = (
            Action(ActionType.PREPARE_BOOT, image=s.image, attempt=s.attempt),
            Action(ActionType.SET_BOOT_DEVICE, device="network"),
            power,
        )
        return c.stay(p.poll_interval, actions, "boot", f"network boot for image {s.image}, attempt {s.attempt}", phase="wait-callback", phase_since=c.at)
    cb = o.boot_callback
    if cb is not None and cb.attempt == s.attempt:
        if not cb.success:
            return c.fail(State.PROVISIONING_ERROR, "DeployFailed", cb.message or "the installer reported a failure", phase=None)
        finish = Action(ActionType.REBOOT) if d.online else Action(ActionType.POWER_OFF)
        actions = (Action(ActionType.SET_BOOT_DEVICE, device="disk", persistent=True), Action(ActionType.CLEAR_BOOT), finish)
        return c.go(State.PROVISIONED, "provisioned", f"image {s.image} written", actions, requeue=p.poll_interval, phase=None, phase_since=None)
    if _elapsed(s.phase_since, c.now) > p.deploy_timeout:
        return c.fail(State.PROVISIONING_ERROR, "DeployTimeout", f"no boot callback within {p.deploy_timeout:g}s", phase=None)
    return c.stay(p.poll_interval)


def _provisioned(c: _Ctx) -> Decision:
    d, s = c.desired, c.status
    if d.deleting or not d.image or d.image != s.image:
        why = "deletion requested" if d.deleting else ("image removed" if not d.image else f"image changed to {d.image}")
        return c.go(State.DEPROVISIONING, "deprovision", why, phase="start", phase_since=c.at)
    return _steady_power(c)


def _deprovisioning(c: _Ctx) -> Decision:
    d, o, s, p = c.desired, c.observed, c.status, c.policy
    if s.phase in (None, "start"):
        actions = (Action(ActionType.POWER_OFF), Action(ActionType.CLEAR_BOOT))
        return c.stay(p.poll_interval, actions, "deprovision", "powering off and removing the boot configuration", phase="wait-off", phase_since=c.at)
    if o.power == Power.OFF:
        if d.deleting:
            return c.go(State.DELETING, "deprovisioned", "deprovisioned before deletion", image=None, phase=None, phase_since=None)
        return c.go(State.AVAILABLE, "deprovisioned", f"image {s.image} removed", image=None, phase=None, phase_since=None)
    if _elapsed(s.phase_since, c.now) > p.deprovision_timeout:
        return c.fail(State.DEPROVISIONING_ERROR, "PowerOffTimeout", f"host still on after {p.deprovision_timeout:g}s", phase=None)
    if o.power == Power.ON:
        return c.stay(p.poll_interval, (Action(ActionType.POWER_OFF),))
    return c.stay(p.poll_interval)


def _deleting(c: _Ctx) -> Decision:
    o = c.observed
    if o.bmc_reachable is False or o.credentials_ok is False:
        return c.go(State.DELETED, "deleted", f"power off skipped: {o.message or 'BMC not usable'}", requeue=None)
    if o.power == Power.OFF:
        return c.go(State.DELETED, "deleted", "host powered off", requeue=None)
    return c.stay(c.policy.poll_interval, (Action(ActionType.POWER_OFF),), "delete", "powering off before deletion")


def _deleted(c: _Ctx) -> Decision:
    return c.stay(None)


_RETRY = {
    State.REGISTRATION_ERROR: State.REGISTERING,
    State.INSPECTION_ERROR: State.INSPECTING,
    State.PROVISIONING_ERROR: State.PROVISIONING,
    State.DEPROVISIONING_ERROR: State.DEPROVISIONING,
}


def _error(c: _Ctx) -> Decision:
    d, o, s, p = c.desired, c.observed, c.status, c.policy
    state = c.state
    if d.deleting:
        if state == State.REGISTRATION_ERROR and not s.registered:
            return c.go(State.DELETED, "deleted", "never registered: no BMC action needed", requeue=None)
        if state == State.REGISTRATION_ERROR:
            return c.go(State.DELETING, "delete", "deletion requested")
        if state in (State.PROVISIONING_ERROR, State.DEPROVISIONING_ERROR) or s.resume_state in (State.PROVISIONED, State.PROVISIONING):
            if state != State.DEPROVISIONING_ERROR:
                return c.go(State.DEPROVISIONING, "deprovision", "deletion requested", phase="start", phase_since=c.at, resume_state=None)
        elif state != State.DEPROVISIONING_ERROR:
            return c.go(State.DELETING, "delete", "deletion requested", resume_state=None)
    if state == State.PROVISIONING_ERROR and (not d.image or d.image != s.image):
        return c.go(State.DEPROVISIONING, "deprovision", "image removed or changed after a provisioning error", phase="start", phase_since=c.at)
    if state == State.REGISTRATION_ERROR and o.bmc_reachable and o.credentials_ok:
        return c.go(State.REGISTERING, "retry", "the BMC answers again")
    waited = _elapsed(s.error.at if s.error else None, c.now)
    delay = p.backoff(max(s.error_count, 1))
    if waited < delay:
        return c.stay(delay - waited)
    if state == State.POWER_MANAGEMENT_ERROR:
        target = s.resume_state or State.AVAILABLE
        return c.go(target, "retry", f"retrying after {s.error_count} failure(s)", resume_state=None)
    target = _RETRY[state]
    changes: dict[str, Any] = {}
    if target == State.PROVISIONING:
        changes = {"attempt": s.attempt + 1, "phase": "boot", "phase_since": c.at}
    elif target == State.DEPROVISIONING:
        changes = {"phase": "start", "phase_since": c.at}
    return c.go(target, "retry", f"retrying after {s.error_count} failure(s)", **changes)


def _detached(c: _Ctx) -> Decision:
    if c.desired.deleting:
        return c.go(State.DELETED, "deleted", "detached: deleted without touching the machine", requeue=None)
    if not c.desired.detached:
        return c.go(State.REGISTERING, "attach", "detach annotation removed: re-registering")
    return c.stay(None)


def _paused(c: _Ctx) -> Decision:
    if c.desired.paused:
        return c.stay(None)
    target = c.status.paused_state or State.REGISTERING
    return c.go(target, "unpause", "pause annotation removed", paused_state=None)


HANDLERS: dict[State, Callable[[_Ctx], Decision]] = {
    State.REGISTERING: _registering,
    State.INSPECTING: _inspecting,
    State.AVAILABLE: _available,
    State.PROVISIONING: _provisioning,
    State.PROVISIONED: _provisioned,
    State.DEPROVISIONING: _deprovisioning,
    State.REGISTRATION_ERROR: _error,
    State.INSPECTION_ERROR: _error,
    State.PROVISIONING_ERROR: _error,
    State.DEPROVISIONING_ERROR: _error,
    State.POWER_MANAGEMENT_ERROR: _error,
    State.DETACHED: _detached,
    State.PAUSED: _paused,
    State.DELETING: _deleting,
    State.DELETED: _deleted,
}


# --------------------------------------------------------------------------------------------
# Failures of the previous decision's actions
# --------------------------------------------------------------------------------------------


def _failure_target(state: State, failure: ActionFailure) -> tuple[State, State | None]:
    """(error state, state to resume after it) for an action that failed in ``state``."""
    if failure.action == ActionType.VALIDATE_BMC or state == State.REGISTERING:
        return State.REGISTRATION_ERROR, None
    if failure.is_authentication and state not in (State.DELETING,):
        return State.REGISTRATION_ERROR, state
    if state == State.INSPECTING:
        return State.INSPECTION_ERROR, None
    if state == State.PROVISIONING:
        return State.PROVISIONING_ERROR, None
    if state == State.DEPROVISIONING:
        return State.DEPROVISIONING_ERROR, None
    return State.POWER_MANAGEMENT_ERROR, state


def _on_failure(c: _Ctx) -> Decision:
    failure = c.observed.failure
    assert failure is not None
    if c.state == State.DELETING and (failure.is_unreachable or failure.is_authentication):
        return c.go(State.DELETED, "deleted", f"power off skipped: {failure.message}", requeue=None)
    if c.state.is_error or c.state in (State.DELETED, State.DETACHED, State.PAUSED):
        return c.stay(c.policy.backoff(max(c.status.error_count, 1)))  # already handled
    target, resume = _failure_target(c.state, failure)
    return c.fail(target, failure.reason, failure.message, resume=resume, phase=None if target != State.POWER_MANAGEMENT_ERROR else c.status.phase)


# --------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------


def step(desired: Desired, observed: Observed, status: Status, now: datetime.datetime, policy: Policy = Policy()) -> Decision:
    """Decide the next state, the actions and when to look again. Pure."""
    if status.state is None:
        status = dataclasses.replace(status, state=State.REGISTERING, state_since=_iso(now))
        first = True
    else:
        first = False
    c = _Ctx(desired, observed, status, now, policy)
    state = c.state

    if desired.paused and state != State.PAUSED:
        decision = c.go(State.PAUSED, "pause", "pause annotation set: no actions", requeue=None, paused_state=state)
    elif state == State.PAUSED:
        decision = _paused(c)
    elif desired.detached and state not in (State.DETACHED, State.DELETED):
        # Re-registration after the detach returns here (or where registering was headed).
        resume = status.resume_state if state in (State.REGISTERING, State.REGISTRATION_ERROR) else state
        decision = c.go(State.DETACHED, "detach", "detach annotation set: the machine is left alone", requeue=None, resume_state=resume)
    elif observed.failure is not None:
        decision = _on_failure(c)
    else:
        decision = HANDLERS[state](c)

    if decision.state != state and decision.state not in ALLOWED[state]:
        raise TransitionError(f"{state.value} -> {decision.state.value} is not in the transition table")
    if first and decision.history is None:
        entry = HistoryEntry(_iso(now), None, decision.state, "created", "node registered with the state machine")
        decision = dataclasses.replace(
            decision, history=entry, status=dataclasses.replace(decision.status, history=(entry,))
        )
    return decision


__all__ = [
    "ALLOWED",
    "Action",
    "ActionFailure",
    "ActionType",
    "BootCallback",
    "Decision",
    "Desired",
    "ERROR_STATES",
    "ErrorInfo",
    "HANDLERS",
    "HistoryEntry",
    "Observed",
    "Policy",
    "Power",
    "Request",
    "State",
    "Status",
    "TransitionError",
    "step",
]
