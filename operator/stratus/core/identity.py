"""Keystone's pure logic: what a Project's children look like, quota mapping and usage,
the names of per-member service accounts, token lifetimes and kubeconfigs. No I/O.

Design decisions:

- **Roles are three ClusterRoles bound per namespace.** `stratus-admin`,
  `stratus-member` and `stratus-reader` ship with the chart (templates/roles.yaml).
  A Project binds them with one RoleBinding per role in its namespace, so a member's
  rights end at the namespace: the API server's RBAC keeps projects apart, not Stratus.
  The roles grant verbs on the whole `stratus.dev` group (resource `*`), so kinds added
  later are covered without touching them.
- **Disabling removes the RoleBindings** and nothing else. Members (and their tokens)
  are refused by RBAC at once; re-enabling restores them.
- **Quota is one ResourceQuota.** Counts of Stratus kinds use object-count quotas
  (`count/servers.stratus.dev`); vCPUs and memory are the requests of the pods that run
  servers (`requests.cpu`, `requests.memory`, so a pod without requests is refused
  while those limits are set); volume gigabytes are PVC storage requests
  (`requests.storage`). Bucket bytes are not a Kubernetes resource: the limit is
  written on the namespace (annotation `stratus.dev/quota-bucket-bytes`) for the object
  store to enforce and is reported in status without a use.
- **Tokens act as a per-member ServiceAccount.** A User member `alice` has the service
  account `user-alice-<hash>` in the project namespace as a second subject of her
  RoleBinding; tokens are issued for it with the TokenRequest API, bound to a Secret
  so that deleting the Secret invalidates the token at once.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re

import yaml

from ..api.registry import GROUP, LABEL_PREFIX

PROJECT_LABEL = f"{LABEL_PREFIX}/project"
ROLE_LABEL = f"{LABEL_PREFIX}/role"
QUOTA_NAME = "stratus-quota"
BUCKET_BYTES_ANNOTATION = f"{LABEL_PREFIX}/quota-bucket-bytes"
RBAC_GROUP = "rbac.authorization.k8s.io"

#: role -> the ClusterRole a member with that role gets in the project namespace.
CLUSTER_ROLES = {"admin": "stratus-admin", "member": "stratus-member", "reader": "stratus-reader"}

#: spec.quota field (camelCase, as on the wire) -> how the API server enforces it.
#: ("count", Kind) is an object-count quota on that Stratus kind; ("resource", name)
#: is a compute or storage resource quota; ("store", "") is enforced elsewhere.
QUOTA_RESOURCES: dict[str, tuple[str, str]] = {
    "servers": ("count", "Server"),
    "vcpus": ("resource", "requests.cpu"),
    "memory": ("resource", "requests.memory"),
    "volumes": ("count", "Volume"),
    "volumeGigabytes": ("resource", "requests.storage"),
    "snapshots": ("count", "BlockSnapshot"),
    "images": ("count", "Image"),
    "buckets": ("count", "Bucket"),
    "bucketBytes": ("store", ""),
    "databases": ("count", "Database"),
    "dataClusters": ("count", "DataCluster"),
    "stacks": ("count", "Stack"),
}


def default_plural(kind: str) -> str:
    return kind.lower() + "s"


def quota_resource(field: str, plurals: dict[str, str] | None = None) -> str:
    """The ResourceQuota resource name enforcing `spec.quota.<field>`; "" when none.

    `plurals` maps Stratus kinds to their plural as served (from discovery); a kind not
    served yet gets its regular plural, so the quota holds from the kind's first object.
    For snapshots any served kind ending in "Snapshot" counts."""
    how, what = QUOTA_RESOURCES[field]
    if how == "resource":
        return what
    if how == "store":
        return ""
    plurals = plurals or {}
    plural = plurals.get(what)
    if plural is None and what.endswith("Snapshot"):
        plural = next((p for k, p in sorted(plurals.items()) if k.endswith("Snapshot")), None)
    return f"count/{plural or default_plural(what)}.{GROUP}"


def quota_value(field: str, value: int | str) -> str:
    """The ResourceQuota quantity for a spec.quota value (volume GiB -> "NGi")."""
    if field == "volumeGigabytes":
        return f"{int(value)}Gi"
    return str(value)


def quota_hard(quota: dict, plurals: dict[str, str] | None = None) -> dict[str, str]:
    """spec.quota (wire form) -> ResourceQuota spec.hard."""
    hard = {}
    for field, value in sorted(quota.items()):
        if value is None or field not in QUOTA_RESOURCES:
            continue
        resource = quota_resource(field, plurals)
        if resource:
            hard[resource] = quota_value(field, value)
    return hard


def quota_usage(quota: dict, rq_status: dict | None, plurals: dict[str, str] | None = None) -> list[dict]:
    """status.quota: each set limit with its use as the ResourceQuota reports it."""
    used = (rq_status or {}).get("used") or {}
    out = []
    for field in QUOTA_RESOURCES:
        value = quota.get(field)
        if value is None:
            continue
        resource = quota_resource(field, plurals)
        out.append({
            "name": field,
            "resource": resource,
            "used": str(used.get(resource, "0")) if resource else "",
            "limit": quota_value(field, value),
        })
    return out


def service_account_for(user: str) -> str:
    """The per-member ServiceAccount that tokens for `user` act as (a DNS label)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", user.lower()).strip("-")[:40].strip("-") or "user"
    digest = hashlib.sha256(user.encode()).hexdigest()[:8]
    return f"user-{slug}-{digest}"


def subjects_for(member: dict, namespace: str) -> list[dict]:
    """RBAC subjects of one member (wire form of api.project.Member)."""
    kind, name = member.get("kind", "User"), member["name"]
    if kind == "Group":
        return [{"kind": "Group", "apiGroup": RBAC_GROUP, "name": name}]
    if kind == "ServiceAccount":
        sa_ns, _, sa_name = name.partition("/")
        return [{"kind": "ServiceAccount", "name": sa_name, "namespace": sa_ns}]
    return [
        {"kind": "User", "apiGroup": RBAC_GROUP, "name": name},
        {"kind": "ServiceAccount", "name": service_account_for(name), "namespace": namespace},
    ]


def role_bindings(project: str, namespace: str, members: list[dict], enabled: bool, owner: dict) -> tuple[list[dict], list[str]]:
    """The RoleBindings a project wants, and the names of those it must not have.

    One binding per role that has members; none at all while the project is disabled."""
    by_role: dict[str, list[dict]] = {r: [] for r in CLUSTER_ROLES}
    for member in members:
        by_role[member.get("role", "member")].extend(subjects_for(member, namespace))
    wanted, unwanted = [], []
    for role, cluster_role in CLUSTER_ROLES.items():
        subjects = by_role[role]
        if not enabled or not subjects:
            unwanted.append(cluster_role)
            continue
        wanted.append({
            "apiVersion": f"{RBAC_GROUP}/v1",
            "kind": "RoleBinding",
            "metadata": {
                "name": cluster_role,
                "namespace": namespace,
                "labels": {PROJECT_LABEL: project, ROLE_LABEL: role},
                "ownerReferences": [owner],
            },
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": cluster_role},
            "subjects": subjects,
        })
    return wanted, unwanted


def namespace_object(project: str, namespace: str, owner: dict, quota: dict) -> dict:
    annotations = {}
    if quota.get("bucketBytes"):
        annotations[BUCKET_BYTES_ANNOTATION] = str(quota["bucketBytes"])
    meta = {"name": namespace, "labels": {PROJECT_LABEL: project}, "ownerReferences": [owner]}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def resource_quota(project: str, namespace: str, owner: dict, quota: dict, plurals: dict[str, str] | None = None) -> dict | None:
    """The project's ResourceQuota; None when spec.quota sets no API-server-enforced limit."""
    hard = quota_hard(quota, plurals)
    if not hard:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": QUOTA_NAME, "namespace": namespace, "labels": {PROJECT_LABEL: project}, "ownerReferences": [owner]},
        "spec": {"hard": hard},
    }


# --- Tokens -------------------------------------------------------------------------------

#: The API server refuses bound tokens shorter than ten minutes.
MIN_TTL_SECONDS = 600
MAX_TTL_SECONDS = 30 * 24 * 3600
_DURATION = re.compile(r"^(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?$")


def parse_duration(text: str) -> int:
    """"8h" -> 28800, "1d12h" -> 129600, "90m" -> 5400. ValueError when not a duration."""
    m = _DURATION.match(text.strip())
    if not text.strip() or not m or not any(m.groups()):
        raise ValueError(f"{text!r} is not a duration such as 30m, 8h or 7d")
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


#: The same grammar for the CRD schema (the API server refuses other values).
DURATION_PATTERN = r"^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"


@dataclasses.dataclass(frozen=True)
class ClusterAccess:
    """How a kubeconfig reaches the API server."""

    server: str
    ca_data: str | None = None  # base64 PEM
    insecure: bool = False


def kubeconfig(access: ClusterAccess, user: str, namespace: str, token: str, context: str) -> str:
    """A kubeconfig for one token, defaulting to the project namespace."""
    cluster: dict = {"server": access.server}
    if access.ca_data:
        cluster["certificate-authority-data"] = access.ca_data
    elif access.insecure:
        cluster["insecure-skip-tls-verify"] = True
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stratus", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": "stratus", "user": user, "namespace": namespace}}],
        "current-context": context,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- Catalog ------------------------------------------------------------------------------

SERVICE_LABEL = f"{LABEL_PREFIX}/service"
SERVICE_TYPE_ANNOTATION = f"{LABEL_PREFIX}/service-type"
SERVICE_URL_ANNOTATION = f"{LABEL_PREFIX}/url"
SERVICE_DESCRIPTION_ANNOTATION = f"{LABEL_PREFIX}/description"


def service_url(service: dict) -> str:
    """Where a Service is reached: its `stratus.dev/url` annotation, else its cluster DNS name."""
    meta = service["metadata"]
    url = (meta.get("annotations") or {}).get(SERVICE_URL_ANNOTATION)
    if url:
        return url
    ports = (service.get("spec") or {}).get("ports") or []
    port = ports[0].get("port") if ports else None
    scheme = "https" if port == 443 or (ports and "https" in (ports[0].get("name") or "")) else "http"
    host = f"{meta['name']}.{meta['namespace']}.svc"
    return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"


def catalog_endpoints(api_server: str, services: list[dict], ready_services: set[tuple[str, str]],
                      local: list[dict] = ()) -> list[dict]:
    """The catalog: the Kubernetes API first, then each labelled Service by name, then
    the operator's in-process endpoints (`local`) that no Service publishes.

    `ready_services` holds (namespace, name) of Services with a ready endpoint. A
    Service wins over an in-process endpoint of the same name: it is what users reach."""
    out = [{"name": "kubernetes", "type": "kubernetes", "url": api_server, "ready": True,
            "description": "The Kubernetes API: every Stratus kind is served here"}]
    seen = {"kubernetes"}
    for svc in sorted(services, key=lambda s: (s["metadata"]["labels"].get(SERVICE_LABEL, ""), s["metadata"]["namespace"])):
        meta = svc["metadata"]
        name = meta["labels"].get(SERVICE_LABEL) or meta["name"]
        if name in seen:
            continue
        seen.add(name)
        ann = meta.get("annotations") or {}
        out.append({"name": name, "type": ann.get(SERVICE_TYPE_ANNOTATION, name), "url": service_url(svc),
                    "ready": (meta["namespace"], meta["name"]) in ready_services,
                    "description": ann.get(SERVICE_DESCRIPTION_ANNOTATION, "")})
    for entry in sorted(local, key=lambda e: e["name"]):
        if entry["name"] not in seen:
            seen.add(entry["name"])
            out.append({"type": entry["name"], "ready": True, "description": "", **entry})
    return out
