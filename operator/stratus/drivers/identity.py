"""The Kubernetes API for Keystone's children, by REST path: RBAC, ResourceQuota,
ServiceAccounts and their tokens, TokenReview, admission policies, discovery.

One generic server-side apply (`apply`) serves every built-in kind, so the identity
controllers need no per-kind client class. Writes use the field manager `stratus`,
like drivers.kube, and are idempotent.
"""

from __future__ import annotations

import json
import threading
import time

from kubernetes.client.rest import ApiException

from .kube import FIELD_MANAGER, api_client

#: kind -> (plural, namespaced) for the built-in kinds the identity controllers write.
KINDS: dict[str, tuple[str, bool]] = {
    "Namespace": ("namespaces", False),
    "ServiceAccount": ("serviceaccounts", True),
    "Secret": ("secrets", True),
    "ResourceQuota": ("resourcequotas", True),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
    "ClusterRole": ("clusterroles", False),
    "ValidatingAdmissionPolicy": ("validatingadmissionpolicies", False),
    "ValidatingAdmissionPolicyBinding": ("validatingadmissionpolicybindings", False),
}


def path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    if name:
        base += f"/{name}"
    return base


def _call(method: str, url: str, body=None, query=None, content_type: str = "application/json"):
    data, _status, _headers = api_client().call_api(
        url, method, body=body, query_params=query or [],
        header_params={"Content-Type": content_type, "Accept": "application/json"},
        response_type="object", auth_settings=["BearerToken"], _return_http_data_only=False,
        _preload_content=True,
    )
    return data


def object_path(obj: dict) -> str:
    plural, namespaced = KINDS[obj["kind"]]
    meta = obj["metadata"]
    return path(obj["apiVersion"], plural, meta.get("namespace") if namespaced else None, meta["name"])


def apply(obj: dict) -> dict:
    """Server-side apply of a built-in object (create or update)."""
    body = json.loads(json.dumps(obj))
    return _call("PATCH", object_path(obj), body, [("fieldManager", FIELD_MANAGER), ("force", "true")],
                 "application/apply-patch+yaml")


def get(api_version: str, plural: str, name: str, namespace: str | None = None) -> dict | None:
    try:
        return _call("GET", path(api_version, plural, namespace, name))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def list_(api_version: str, plural: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict]:
    query = [("labelSelector", label_selector)] if label_selector else []
    return _call("GET", path(api_version, plural, namespace), query=query).get("items") or []


def delete(api_version: str, plural: str, name: str, namespace: str | None = None, uid: str | None = None,
           propagation: str = "Background") -> bool:
    """Delete; True when it was there. With `uid`, only that incarnation of the object."""
    body: dict = {"propagationPolicy": propagation}
    if uid:
        body["preconditions"] = {"uid": uid}
    try:
        _call("DELETE", path(api_version, plural, namespace, name), body)
        return True
    except ApiException as exc:
        if exc.status in (404, 409):
            return False
        raise


def create(api_version: str, plural: str, body: dict, namespace: str | None = None) -> dict:
    return _call("POST", path(api_version, plural, namespace), body)


def request_token(namespace: str, service_account: str, seconds: int, bound: dict, audiences: list[str] | None = None) -> dict:
    """TokenRequest for a ServiceAccount, bound to `bound` ({kind, apiVersion, name, uid}).

    Returns the TokenRequest status: {token, expirationTimestamp}."""
    spec: dict = {"expirationSeconds": seconds, "boundObjectRef": bound}
    if audiences:
        spec["audiences"] = audiences
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    out = _call("POST", path("v1", "serviceaccounts", namespace, service_account) + "/token", body)
    return out["status"]


def review_token(token: str) -> dict:
    """TokenReview: {authenticated, user: {username, groups, ...}, error?}."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    return _call("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body).get("status") or {}


_discovery_lock = threading.Lock()
_discovery: tuple[float, list[dict]] = (0.0, [])


def stratus_resources(group_version: str, max_age: float = 30.0) -> list[dict]:
    """The resources served in the Stratus API group (discovery, cached for `max_age`)."""
    global _discovery
    with _discovery_lock:
        at, resources = _discovery
        if time.monotonic() - at < max_age and resources:
            return resources
        try:
            out = _call("GET", f"/apis/{group_version}")
            resources = [r for r in out.get("resources") or [] if "/" not in r["name"]]
        except ApiException as exc:
            if exc.status != 404:
                raise
            resources = []
        _discovery = (time.monotonic(), resources)
        return resources


def stratus_plurals(group_version: str) -> dict[str, str]:
    """Kind -> plural for every served Stratus kind."""
    return {r["kind"]: r["name"] for r in stratus_resources(group_version)}
