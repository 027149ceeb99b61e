"""KubeVirt and CDI operations that are not plain object reads and writes (those go
through drivers.kube like everything else): discovery of optional kinds, and the VMI
subresource actions (pause, unpause, soft reboot), with their stand-in equivalents.
"""

from __future__ import annotations

import functools

from kubernetes.client.rest import ApiException

from . import kube


@functools.lru_cache(maxsize=64)
def _served(api_version: str, plural: str) -> bool:
    try:
        return any(r.get("name") == plural for r in kube.resources(api_version))
    except ApiException:
        return False


def has_resource(api_version: str, plural: str) -> bool:
    """Whether the API server serves the kind (an optional one, such as Image). Only a
    positive answer is cached, so a kind installed later is found."""
    found = _served(api_version, plural)
    if not found:
        _served.cache_clear()
    return found


SUBRESOURCES = "subresources.kubevirt.io/v1"
#: On the stand-ins (no subresource API), a kwok Stage turns this VMI annotation into
#: the VMI's Paused condition and back.
STANDIN_PAUSE_ANNOTATION = "standin.stratus.dev/pause-requested"


def can(action: str) -> bool:
    """Whether the VMI subresource ``action`` (pause, unpause, softreboot) is served
    (not on the stand-ins)."""
    return has_resource(SUBRESOURCES, f"virtualmachineinstances/{action}")


def _vmi_action(namespace: str, name: str, action: str) -> bool:
    """PUT a KubeVirt VMI subresource. False when the subresource API is not served."""
    if not can(action):
        return False
    # 404: gone; 409: already in that state.
    kube.request("PUT", kube.path(SUBRESOURCES, "virtualmachineinstances", namespace, name, action), {},
                 absent=(404, 409))
    return True


def set_paused(namespace: str, name: str, paused: bool) -> None:
    if _vmi_action(namespace, name, "pause" if paused else "unpause"):
        return
    kube.patch("kubevirt.io/v1", "virtualmachineinstances", name,
               {"metadata": {"annotations": {STANDIN_PAUSE_ANNOTATION: "true" if paused else None}}}, namespace)


def soft_reboot(namespace: str, name: str) -> bool:
    """Ask the guest to reboot; False when only a hard reboot is possible."""
    return _vmi_action(namespace, name, "softreboot")


def list_custom(api_version: str, plural: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict]:
    """Kept for the callers that still use it (Stack, Database); new code calls kube.list_."""
    return kube.list_(api_version, plural, namespace, label_selector)
