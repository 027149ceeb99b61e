"""Writing a child-backed status: one helper for the controllers that mirror state
(Server, Volume, BlockSnapshot, Bucket, Image, ServerGroup).

Only the fields that differ are patched (drivers.kube.write_status over
core.status.status_diff), so a refresh that finds nothing new costs no write. An Event is
posted when the phase changes, and (``events_on_reason``) when the Ready condition's
reason changes within a phase, so ``kubectl describe`` tells the story without operator
logs."""

from __future__ import annotations

import kopf

from ..core.conditions import now
from ..core.status import transition_event
from ..drivers import kube


def post_event(body, type_: str, reason: str, message: str) -> None:
    """A kopf event from handlers; outside them (the image service's upload thread) the
    Event is created directly."""
    try:
        kopf.event(body, type=type_, reason=reason, message=message)
    except LookupError:
        kube.create_event(body, type_, reason, message, now())


def write_status(body: dict, plural: str, status: dict, *, error_phase: str, events_on_reason: bool = False) -> dict:
    """Patch the fields of ``status`` that differ from ``body``'s; returns them."""
    changed = kube.write_status(body, plural, status)
    if changed:
        event = transition_event(body.get("status"), status, changed, error_phase=error_phase, on_reason=events_on_reason)
        if event:
            post_event(body, *event)
    return changed
