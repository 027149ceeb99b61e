"""The Kubernetes API: the one access layer every controller, service and command uses.

One set of verbs for core and custom objects alike, by REST path through the official
client's ``call_api`` (no per-kind client classes):

    get / list_ / apply / create / patch / patch_status / delete / write_status

``get`` and ``patch`` answer None, and ``delete`` False, when the object does not exist:
callers never catch a 404. Writes of desired children are server-side applies under the
field manager ``stratus``, which makes every write idempotent: a handler that runs twice,
or after a crash, converges. ``path`` is the one place that builds an API path.

The older entry points (``core()``, ``custom()``, ``api_client()``, ``apply_core``,
``get_namespace``, ``list_pods``, ``object_path``) stay for the callers that use them.
"""

from __future__ import annotations

import base64
import builtins
import functools
import json
import threading
from collections.abc import Iterable, Mapping

import kubernetes
from kubernetes.client.rest import ApiException

from ..core.status import status_diff

FIELD_MANAGER = "stratus"
_lock = threading.Lock()

# Handlers run on kopf's thread pool (``controllers.settings``: 16 workers). The
# client's default connection pool (5 per core) is smaller than that on small
# machines, and every connection it discards costs a new TLS handshake later (the
# 1,000-Server benchmark logged hundreds), so the pool is sized above the workers.
POOL_SIZE = 32

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

#: kind -> (plural, namespaced) of the built-in kinds Stratus reads and writes; custom
#: kinds name their plural where they are applied.
KINDS: dict[str, tuple[str, bool]] = {
    "Namespace": ("namespaces", False),
    "Node": ("nodes", False),
    "Pod": ("pods", True),
    "Service": ("services", True),
    "Event": ("events", True),
    "ServiceAccount": ("serviceaccounts", True),
    "Secret": ("secrets", True),
    "ConfigMap": ("configmaps", True),
    "PersistentVolumeClaim": ("persistentvolumeclaims", True),
    "ResourceQuota": ("resourcequotas", True),
    "StorageClass": ("storageclasses", False),
    "VolumeSnapshotClass": ("volumesnapshotclasses", False),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
    "ClusterRole": ("clusterroles", False),
    "ClusterRoleBinding": ("clusterrolebindings", False),
    "ValidatingAdmissionPolicy": ("validatingadmissionpolicies", False),
    "ValidatingAdmissionPolicyBinding": ("validatingadmissionpolicybindings", False),
}


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
    if isinstance(obj, (builtins.list, tuple)):
        return [plain(v) for v in obj]
    return obj


# -- paths -------------------------------------------------------------------------------------


def path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None,
         subresource: str | None = None) -> str:
    """The REST path of a collection (no name) or an object, core (``v1``) or grouped."""
    out = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace:
        out += f"/namespaces/{namespace}"
    if plural:
        out += f"/{plural}"
    if name:
        out += f"/{name}"
    if subresource:
        out += f"/{subresource}"
    return out


def object_path(api_version: str, plural: str, name: str, namespace: str | None = None) -> str:
    return path(api_version, plural, namespace, name)


def plural_of(kind: str) -> str:
    """The plural of a built-in kind (KINDS), else the lower-case kind plus s."""
    known = KINDS.get(kind)
    return known[0] if known else kind.lower() + "s"


def _scope(obj: dict) -> str | None:
    """The namespace to address ``obj`` in (None for a cluster-scoped built-in)."""
    known = KINDS.get(obj.get("kind", ""))
    if known and not known[1]:
        return None
    return obj["metadata"].get("namespace")


# -- the one request --------------------------------------------------------------------------


def request(method: str, url: str, body=None, *, query: Iterable[tuple[str, str]] = (), content_type: str = JSON,
            absent: tuple[int, ...] = (404,)):
    """One call to the API server; None when it answers one of the ``absent`` statuses."""
    try:
        return api_client().call_api(
            url, method, body=body, query_params=builtins.list(query),
            header_params={"Content-Type": content_type, "Accept": JSON},
            response_type="object", auth_settings=["BearerToken"], _return_http_data_only=True,
        )
    except ApiException as exc:
        if exc.status in absent:
            return None
        raise


def _wire(obj: dict) -> dict:
    """A JSON-clean copy (kopf views, tuples, enums become what the server reads)."""
    return json.loads(json.dumps(obj, default=str))


# -- verbs ------------------------------------------------------------------------------------


def get(api_version: str, plural: str, name: str, namespace: str | None = None) -> dict | None:
    """The object, or None when it does not exist."""
    return request("GET", path(api_version, plural, namespace, name))


def secret_data(name: str, namespace: str) -> dict[str, str] | None:
    """A Secret's values, decoded; None when the Secret does not exist."""
    secret = get("v1", "secrets", name, namespace)
    if secret is None:
        return None
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def list_(api_version: str, plural: str, namespace: str | None = None, label_selector: str | None = None,
          field_selector: str | None = None) -> list[dict]:
    """The items of a collection (all namespaces without ``namespace``); [] when the kind
    is not served."""
    query = [(k, v) for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v]
    out = request("GET", path(api_version, plural, namespace), query=query)
    return (out or {}).get("items") or []


def apply(obj: dict, plural: str | None = None, manager: str = FIELD_MANAGER) -> dict:
    """Server-side apply of any object (create or update, idempotent). ``plural`` may be
    left out for the built-in kinds of KINDS. A separate ``manager`` owns only the fields
    it sets (e.g. the Stack's volume attachments)."""
    meta = obj["metadata"]
    url = path(obj["apiVersion"], plural or plural_of(obj["kind"]), _scope(obj), meta["name"])
    return request("PATCH", url, _wire(obj), query=[("fieldManager", manager), ("force", "true")],
                   content_type=APPLY_PATCH, absent=())


def apply_core(obj: dict) -> dict:
    """Server-side apply of a built-in object (Namespace, Secret, ConfigMap, PVC, ...)."""
    return apply(obj)


def create(obj: dict, plural: str | None = None) -> dict | None:
    """Create; None when an object of that name already exists."""
    url = path(obj["apiVersion"], plural or plural_of(obj["kind"]), _scope(obj))
    return request("POST", url, _wire(obj), absent=(409,))


def patch(api_version: str, plural: str, name: str, body: dict, namespace: str | None = None,
          subresource: str | None = None) -> dict | None:
    """JSON merge patch (None values remove fields); None when the object is gone."""
    return request("PATCH", path(api_version, plural, namespace, name, subresource), _wire(body),
                   content_type=MERGE_PATCH)


def patch_status(api_version: str, plural: str, name: str, status: dict, namespace: str | None = None) -> dict | None:
    """Merge-patch the status subresource; None when the object is gone."""
    return patch(api_version, plural, name, {"status": status}, namespace, "status")


def delete(api_version: str, plural: str, name: str, namespace: str | None = None, *, uid: str | None = None,
           propagation: str = "Foreground", grace_period: int | None = None) -> bool:
    """Delete; True when it was there. With ``uid``, only that incarnation of the object
    (another one of the same name answers False); ``grace_period`` overrides the object's
    (0: a Pod goes at once)."""
    body: dict = {"propagationPolicy": propagation}
    if grace_period is not None:
        body["gracePeriodSeconds"] = grace_period
    if uid:
        body["preconditions"] = {"uid": uid}
    try:
        request("DELETE", path(api_version, plural, namespace, name), body, absent=())
    except ApiException as exc:
        if exc.status == 404 or (uid and exc.status == 409):
            return False
        raise
    return True


def write_status(body: Mapping, plural: str, status: dict, *, minor: Iterable[str] = ()) -> dict:
    """Patch only the status fields of ``status`` that differ from ``body``'s (see
    core.status.status_diff); returns them ({} when nothing was written)."""
    changed = status_diff(body.get("status"), status, minor=minor)
    if changed:
        meta = body["metadata"]
        patch_status(body["apiVersion"], plural, meta["name"], changed, meta.get("namespace"))
    return changed


# -- core objects --------------------------------------------------------------------------


def get_namespace(name: str) -> dict | None:
    return get("v1", "namespaces", name)


def list_pods(namespace: str, label_selector: str) -> list[dict]:
    return list_("v1", "pods", namespace, label_selector)


def create_event(obj: Mapping, type_: str, reason: str, message: str, at: str) -> dict | None:
    """A core Event about ``obj`` (for code that runs outside kopf's handlers)."""
    meta = obj["metadata"]
    event = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta.get("namespace") or "default"},
        "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
                           "namespace": meta.get("namespace"), "uid": meta["uid"]},
        "type": type_, "reason": reason, "message": message[:1024],
        "firstTimestamp": at, "lastTimestamp": at, "count": 1,
        "source": {"component": "stratus"}, "reportingComponent": "stratus",
    }
    return create(event)


# -- discovery ------------------------------------------------------------------------------


def resources(group_version: str) -> list[dict]:
    """The resources the API server serves in ``group_version`` ([] when it serves none)."""
    out = request("GET", path(group_version, ""))
    return (out or {}).get("resources") or []


# -- authentication and authorization --------------------------------------------------------


def request_token(namespace: str, service_account: str, seconds: int, bound: dict,
                  audiences: list[str] | None = None) -> dict:
    """TokenRequest for a ServiceAccount, bound to ``bound`` ({kind, apiVersion, name, uid}).
    Returns the TokenRequest status: {token, expirationTimestamp}."""
    spec: dict = {"expirationSeconds": seconds, "boundObjectRef": bound}
    if audiences:
        spec["audiences"] = audiences
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
    return request("POST", path("v1", "serviceaccounts", namespace, service_account, "token"), body, absent=())["status"]


def review_token(token: str, audiences: list[str] | None = None) -> dict:
    """TokenReview: {authenticated, user: {username, uid, groups, extra}, error?}."""
    spec = {"token": token, **({"audiences": audiences} if audiences else {})}
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
    return request("POST", path("authentication.k8s.io/v1", "tokenreviews"), body, absent=()).get("status") or {}


def review_access(spec: dict) -> dict:
    """SubjectAccessReview of ``spec`` (user, groups, uid, extra and resourceAttributes or
    nonResourceAttributes): {allowed, denied?, reason?}. drivers.access caches these."""
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
    return request("POST", path("authorization.k8s.io/v1", "subjectaccessreviews"), body, absent=()).get("status") or {}
