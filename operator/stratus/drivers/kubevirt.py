"""I/O for the compute and block-storage controllers beyond drivers/kube.py: listing,
creating and patching custom objects (KubeVirt, CDI, CSI snapshot and Stratus kinds),
and core PVCs. Same client, same field manager, same idempotence rules.
"""

from __future__ import annotations

import functools
import json

from kubernetes.client.rest import ApiException

from . import kube


def list_custom(api_version: str, plural: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict]:
    group, _, version = api_version.rpartition("/")
    kwargs = {"label_selector": label_selector} if label_selector else {}
    if namespace:
        out = kube.custom().list_namespaced_custom_object(group, version, namespace, plural, **kwargs)
    else:
        out = kube.custom().list_cluster_custom_object(group, version, plural, **kwargs)
    return out.get("items", [])


@functools.lru_cache(maxsize=64)
def _served(api_version: str, plural: str) -> bool:
    group, _, version = api_version.rpartition("/")
    try:
        res = kube.api_client().call_api(f"/apis/{group}/{version}", "GET", response_type="object",
                                         auth_settings=["BearerToken"], _return_http_data_only=True)
    except ApiException:
        return False
    return any(r.get("name") == plural for r in (res or {}).get("resources", []))


def has_resource(api_version: str, plural: str) -> bool:
    """Whether the API server serves the kind (an optional one, such as Image). Only a
    positive answer is cached, so a kind installed later is found."""
    found = _served(api_version, plural)
    if not found:
        _served.cache_clear()
    return found


def create_custom(obj: dict, plural: str) -> dict | None:
    """Create; None when it already exists."""
    group, _, version = obj["apiVersion"].rpartition("/")
    try:
        return kube.custom().create_namespaced_custom_object(group, version, obj["metadata"]["namespace"], plural,
                                                             json.loads(json.dumps(obj)))
    except ApiException as exc:
        if exc.status == 409:
            return None
        raise


def patch(api_version: str, plural: str, name: str, body: dict, namespace: str | None = None) -> dict | None:
    """JSON merge patch (None values remove fields); None when the object is gone."""
    try:
        return kube.api_client().call_api(
            kube.object_path(api_version, plural, name, namespace),
            "PATCH",
            header_params={"Content-Type": "application/merge-patch+json", "Accept": "application/json"},
            body=body,
            response_type="object",
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def get_pvc(name: str, namespace: str) -> dict | None:
    try:
        return kube.api_client().sanitize_for_serialization(kube.core().read_namespaced_persistent_volume_claim(name, namespace))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def apply_pvc(obj: dict) -> dict:
    return kube.apply_core(obj)


def resize_pvc(name: str, namespace: str, size: str) -> None:
    patch("v1", "persistentvolumeclaims", name, {"spec": {"resources": {"requests": {"storage": size}}}}, namespace)


def get_storage_class(name: str) -> dict | None:
    import kubernetes

    try:
        return kube.api_client().sanitize_for_serialization(
            kubernetes.client.StorageV1Api(kube.api_client()).read_storage_class(name))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


SUBRESOURCES = "subresources.kubevirt.io/v1"
#: On the stand-ins (no subresource API), a kwok Stage turns this VMI annotation into
#: the VMI's Paused condition and back.
STANDIN_PAUSE_ANNOTATION = "standin.stratus.dev/pause-requested"


def _vmi_action(namespace: str, name: str, action: str) -> bool:
    """PUT a KubeVirt VMI subresource (pause, unpause, softreboot). False when the
    subresource API is not served (the stand-ins)."""
    if not has_resource(SUBRESOURCES, f"virtualmachineinstances/{action}"):
        return False
    try:
        kube.api_client().call_api(
            f"/apis/{SUBRESOURCES}/namespaces/{namespace}/virtualmachineinstances/{name}/{action}", "PUT",
            header_params={"Content-Type": "application/json"}, body={}, auth_settings=["BearerToken"],
            _return_http_data_only=True)
    except ApiException as exc:
        if exc.status not in (404, 409):  # gone, or already in that state
            raise
    return True


def set_paused(namespace: str, name: str, paused: bool) -> None:
    if _vmi_action(namespace, name, "pause" if paused else "unpause"):
        return
    patch("kubevirt.io/v1", "virtualmachineinstances", name,
          {"metadata": {"annotations": {STANDIN_PAUSE_ANNOTATION: "true" if paused else None}}}, namespace)


def soft_reboot(namespace: str, name: str) -> bool:
    """Ask the guest to reboot; False when only a hard reboot is possible."""
    return _vmi_action(namespace, name, "softreboot")
