"""The Server's one-shot actions as a state machine over its annotations, without I/O.

Reboot and rebuild share the annotation ``stratus.dev/reboot`` (api.server):

    (none) --rebuild needed-----------------> rebuilding  (VM halted)
    soft|hard --not ACTIVE/PAUSED-----------> (none)      RebootRefused
    soft --soft reboot served---------------> (none)      guest asked to reboot
    soft|hard ------------------------------> stopping    (VM halted)
    stopping|rebuilding --VMI gone----------> (none)      VM started again

Each function answers a ``Step``: what to do (``effect``), the annotation's next value
(``annotation``: a value, None to remove it, or UNCHANGED) and the Event to post. The
controller (controllers/server.py) reads the world, asks, and carries the step out.
Live migration (``stratus.dev/migrate``) is admitted by the same phase rule.
"""

from __future__ import annotations

import dataclasses
import enum

#: The reboot annotation's value while the VM is being stopped.
REBOOT_STOPPING = "stopping"
#: Its value while the VM is being stopped for a rebuild.
REBUILD_STOPPING = "rebuilding"
#: What a user may write into it.
REBOOT_KINDS = ("soft", "hard")
#: Server phases an action may start from.
ACTIONABLE_PHASES = ("ACTIVE", "PAUSED")


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


#: Leave the annotation as it is.
UNCHANGED = _Unchanged()


class Effect(str, enum.Enum):
    NONE = "none"
    #: Ask the guest to reboot (the VMI softreboot subresource).
    SOFT_REBOOT = "soft-reboot"
    #: Apply the VM halted (it stops; the VMI goes away).
    STOP = "stop"
    #: Apply the VM as the spec says (it starts again).
    START = "start"


@dataclasses.dataclass(frozen=True)
class Step:
    effect: Effect = Effect.NONE
    annotation: str | None | _Unchanged = UNCHANGED
    #: (type, reason, message) of the Event to post, or None.
    event: tuple[str, str, str] | None = None


NOTHING = Step()


def action_of(annotation: str | None) -> str:
    """The action in progress: "reboot", "rebuild" or ""."""
    return {REBOOT_STOPPING: "reboot", REBUILD_STOPPING: "rebuild"}.get(annotation or "", "")


def halted(annotation: str | None) -> bool:
    """Whether the VM must be applied halted (a reboot or rebuild is stopping it)."""
    return bool(action_of(annotation))


def can_act(phase: str | None) -> bool:
    return phase in ACTIONABLE_PHASES


def refusal(action: str, phase: str | None) -> tuple[str, str, str]:
    """The Event of an action that a Server in ``phase`` cannot take."""
    return ("Warning", f"{action}Refused", f"{'Live migration needs' if action == 'Migration' else 'Reboot needs'} "
            f"an ACTIVE server; it is {phase}. The request was dropped: annotate again once it is ACTIVE")


def on_reboot_request(value: str | None, phase: str | None, soft_supported: bool) -> Step:
    """The user wrote ``value`` into the reboot annotation."""
    if value not in REBOOT_KINDS:
        return NOTHING  # in progress ("stopping", "rebuilding"), removed, or not ours
    if not can_act(phase):
        return Step(annotation=None, event=refusal("Reboot", phase))
    if value == "soft" and soft_supported:
        return Step(Effect.SOFT_REBOOT, None, ("Normal", "Rebooting", "Asked the guest to reboot (soft)"))
    return Step(Effect.STOP, REBOOT_STOPPING,
                ("Normal", "Rebooting", f"Rebooting ({value}): stopping the virtual machine, then starting it"))


def on_vm_observed(annotation: str | None, vmi_present: bool) -> Step:
    """After a look at the VM: a reboot or rebuild finishes once the old VMI is gone."""
    action = action_of(annotation)
    if not action or vmi_present:
        return NOTHING
    message = "The virtual machine was stopped; starting it again" + (" from its new root disk" if action == "rebuild" else "")
    return Step(Effect.START, None, ("Normal", "Rebooted" if action == "reboot" else "Rebuilt", message))


def on_sync(annotation: str | None, current_root: str, wanted_root: str, power_state: str, image: str) -> Step:
    """Before applying the VM: a new image's root disk needs a fresh start of the VM (a
    rebuild), unless an action is already running or the Server is to be stopped."""
    if current_root and current_root != wanted_root and annotation is None and power_state != "Stopped":
        return Step(Effect.STOP, REBUILD_STOPPING,
                    ("Normal", "Rebuilding", f"Rebuilding from image {image!r}: stopping the virtual machine"))
    return NOTHING
