"""Identity-specific calls beyond drivers.kube (which holds TokenRequest, TokenReview and
SubjectAccessReview with the other verbs): discovery of the Stratus kinds for the
catalog and policy, cached.
"""

from __future__ import annotations

import threading
import time

from . import kube

_discovery_lock = threading.Lock()
_discovery: tuple[float, list[dict]] = (0.0, [])


def stratus_resources(group_version: str, max_age: float = 30.0) -> list[dict]:
    """The resources served in the Stratus API group (discovery, cached for `max_age`)."""
    global _discovery
    with _discovery_lock:
        at, resources = _discovery
        if time.monotonic() - at < max_age and resources:
            return resources
        resources = [r for r in kube.resources(group_version) if "/" not in r["name"]]
        _discovery = (time.monotonic(), resources)
        return resources


def stratus_plurals(group_version: str) -> dict[str, str]:
    """Kind -> plural for every served Stratus kind."""
    return {r["kind"]: r["name"] for r in stratus_resources(group_version)}
