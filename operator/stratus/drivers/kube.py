"""The Kubernetes API, through the official client (dynamic-free: custom objects and core).

Children are written with server-side apply under the field manager `stratus`, which
makes every write idempotent: a handler that runs twice, or after a crash, converges.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Mapping

import kubernetes
from kubernetes.client.rest import ApiException

FIELD_MANAGER = "stratus"
_lock = threading.Lock()


# Handlers run on kopf's thread pool (``controllers.settings``: 16 workers). The
# client's default connection pool (5 per core) is smaller than that on small
# machines, and every connection it discards costs a new TLS handshake later (the
# 1,000-Server benchmark logged hundreds), so the pool is sized above the workers.
POOL_SIZE = 32


@functools.cache
def api_client() -> kubernetes.client.ApiClient:
    with _lock:
        configuration = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = POOL_SIZE
        # As the loaders without a configuration did: the default for any other client.
        kubernetes.client.Configuration.set_default(configuration)
        return kubernetes.client.ApiClient(configuration)


def custom() -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api_client())


def core() -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client())


def plain(obj):
    """A deep copy made of plain dicts and lists (kopf hands out read-only mapping views)."""
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def _split(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def get(api_version: str, plural: str, name: str, namespace: str | None = None) -> dict | None:
    """The object, or None when it does not exist."""
    group, version = _split(api_version)
    try:
        if namespace:
            return custom().get_namespaced_custom_object(group, version, namespace, plural, name)
        return custom().get_cluster_custom_object(group, version, plural, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _server_side_apply(path: str, obj: dict, manager: str = FIELD_MANAGER) -> dict:
    """PATCH with application/apply-patch+yaml (JSON is valid YAML). Written against the
    generic call_api because the typed methods of the pinned client do not accept the
    apply content type."""
    return api_client().call_api(
        path,
        "PATCH",
        query_params=[("fieldManager", manager), ("force", "true")],
        header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
        body=json.loads(json.dumps(obj)),
        response_type="object",
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
    )


def object_path(api_version: str, plural: str, name: str, namespace: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{ns}/{plural}/{name}"


def apply(obj: dict, plural: str, manager: str = FIELD_MANAGER) -> dict:
    """Server-side apply of any object (create or update, idempotent). A separate
    ``manager`` owns only the fields it sets (e.g. the Stack's volume attachments)."""
    meta = obj["metadata"]
    return _server_side_apply(object_path(obj["apiVersion"], plural, meta["name"], meta.get("namespace")), obj, manager)


def delete(api_version: str, plural: str, name: str, namespace: str | None = None) -> bool:
    """Delete with foreground propagation; True when it was there."""
    group, version = _split(api_version)
    opts = kubernetes.client.V1DeleteOptions(propagation_policy="Foreground")
    try:
        if namespace:
            custom().delete_namespaced_custom_object(group, version, namespace, plural, name, body=opts)
        else:
            custom().delete_cluster_custom_object(group, version, plural, name, body=opts)
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


def patch_status(api_version: str, plural: str, name: str, status: dict, namespace: str | None = None) -> dict | None:
    """Merge-patch the status subresource; None when the object is gone."""
    group, version = _split(api_version)
    body = {"status": status}
    try:
        if namespace:
            return custom().patch_namespaced_custom_object_status(group, version, namespace, plural, name, body)
        return custom().patch_cluster_custom_object_status(group, version, plural, name, body)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def list_pods(namespace: str, label_selector: str) -> list[dict]:
    pods = core().list_namespaced_pod(namespace, label_selector=label_selector)
    return [api_client().sanitize_for_serialization(p) for p in pods.items]


def apply_core(obj: dict) -> dict:
    """Server-side apply of a core/v1 object (Namespace, Secret, ConfigMap, ...)."""
    plural = _snake(obj["kind"]).replace("_", "") + "s"
    return apply(obj, plural)


def get_namespace(name: str) -> dict | None:
    try:
        return api_client().sanitize_for_serialization(core().read_namespace(name))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _snake(kind: str) -> str:
    out = []
    for i, ch in enumerate(kind):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
