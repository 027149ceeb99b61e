"""Writing a child-backed status: one helper for the controllers that mirror state
(Server, Volume, BlockSnapshot, Bucket).

Only the fields that differ are patched, so a refresh that finds nothing new costs no
write. An Event is posted when the phase changes, and (``events_on_reason``) when the
Ready condition's reason changes within a phase, so ``kubectl describe`` tells the
story without operator logs."""

from __future__ import annotations

import kopf

from ..api.registry import API_VERSION
from ..core.conditions import get_condition
from ..drivers import kube


def write_status(body: dict, plural: str, status: dict, *, error_phase: str, events_on_reason: bool = False) -> dict:
    """Patch the fields of ``status`` that differ from ``body``'s; returns them."""
    meta = body["metadata"]
    old = body.get("status") or {}
    changed = {k: v for k, v in status.items() if old.get(k) != v}
    if not changed:
        return changed
    kube.patch_status(API_VERSION, plural, meta["name"], changed, meta["namespace"])
    old_ready = get_condition(old.get("conditions"), "Ready") or {}
    ready = get_condition(status.get("conditions") or old.get("conditions"), "Ready") or {}
    reason_moved = events_on_reason and ready.get("reason") and ready.get("reason") != old_ready.get("reason")
    if "phase" in changed or reason_moved:
        phase = status.get("phase", old.get("phase"))
        kopf.event(body, type="Warning" if phase == error_phase else "Normal", reason=ready.get("reason") or phase,
                   message=f"{old.get('phase') or 'new'} -> {phase}: {ready.get('message', '')}")
    return changed
