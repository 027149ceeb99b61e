"""Status writes, decided without I/O: which fields changed, and which Event a change
deserves. drivers.kube.write_status patches what ``status_diff`` returns;
controllers.status.write_status adds the Event of ``transition_event``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .conditions import get_condition


def status_diff(old: Mapping | None, new: Mapping, *, minor: Iterable[str] = ()) -> dict:
    """The fields of ``new`` whose value differs from ``old``'s (fields ``new`` leaves
    out are not touched). When only ``minor`` fields differ the answer is {}: they are
    written along with a real change, never on their own (a poll timestamp, say)."""
    old = old or {}
    changed = {k: v for k, v in new.items() if old.get(k) != v}
    if set(changed) <= set(minor):
        return {}
    return changed


def transition_event(old: Mapping | None, new: Mapping, changed: Mapping, *, error_phase: str,
                     on_reason: bool = False) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event a status write deserves, or None.

    One Event when the phase changes and, with ``on_reason``, when the Ready condition's
    reason changes within a phase. Warning when the new phase is ``error_phase``."""
    old = old or {}
    old_ready = get_condition(old.get("conditions"), "Ready") or {}
    ready = get_condition(new.get("conditions") or old.get("conditions"), "Ready") or {}
    reason_moved = on_reason and ready.get("reason") and ready.get("reason") != old_ready.get("reason")
    if "phase" not in changed and not reason_moved:
        return None
    phase = new.get("phase", old.get("phase"))
    return ("Warning" if phase == error_phase else "Normal", ready.get("reason") or phase,
            f"{old.get('phase') or 'new'} -> {phase}: {ready.get('message', '')}")
