"""Conditions as plain dicts, the shape they have on the wire (metav1.Condition).

`set_condition` keeps `lastTransitionTime` when the status does not change, so
repeated reconciles of an unchanged world write the same status (no churn).
"""

from __future__ import annotations

import datetime


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(
    conditions: list[dict] | None,
    type_: str,
    status: bool | str,
    reason: str,
    message: str = "",
    generation: int = 0,
    at: str | None = None,
) -> list[dict]:
    """Return a new list with the condition of `type_` set; others are kept in order."""
    if isinstance(status, bool):
        status = "True" if status else "False"
    conditions = [dict(c) for c in (conditions or [])]
    for cond in conditions:
        if cond.get("type") == type_:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = at or now()
            cond.update(status=status, reason=reason, message=message, observedGeneration=generation)
            return conditions
    conditions.append(
        {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": at or now(),
        }
    )
    return conditions


def get_condition(conditions: list[dict] | None, type_: str) -> dict | None:
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None


def is_true(conditions: list[dict] | None, type_: str) -> bool:
    cond = get_condition(conditions, type_)
    return bool(cond and cond.get("status") == "True")
