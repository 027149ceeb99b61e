"""Project: creates and owns its namespace, the members' RoleBindings and the quota;
reports use against the quota; deletes in order.

Reconciliation is level-based: every create, resume, spec change and a ten-minute
resync computes the whole set of children from the spec (`stratus.core.identity`) and applies it; RoleBindings
of roles nobody holds (or all of them, while the project is disabled) are deleted.
A watch on the project's ResourceQuota copies its use into `status.quota`.

Deletion order (the `stratus.dev/finalizer` holds the Project until it is done):

1. the RoleBindings go first, so members can create nothing new meanwhile;
2. every Stratus object in the namespace is deleted, and their own finalizers release
   what lives outside Kubernetes (buckets, BMC power, ledger entries) while the
   Secrets and ConfigMaps they need still exist; `status.remaining` lists what is left;
3. only then the namespace, and the Project goes once the namespace is gone.

Letting the namespace controller delete everything at once would race a bucket's
finalizer against the deletion of the Secret holding its credentials.
"""

from __future__ import annotations

import kopf

from ..api.project import Project, ProjectPhase
from ..api.registry import API_VERSION, GROUP, VERSION
from ..core import identity
from ..core.compute import owner_reference
from ..core.conditions import set_condition
from ..drivers import kube
from ..drivers.identity import stratus_plurals, stratus_resources

PROJECT_LABEL = identity.PROJECT_LABEL
RBAC = "rbac.authorization.k8s.io/v1"
DELETE_POLL = 2


def namespace_for(project: Project) -> str:
    return project.spec.namespace or project.metadata.name


def _status(body: dict, **fields) -> None:
    kube.write_status(body, "projects", fields)


def _plurals() -> dict[str, str]:
    return stratus_plurals(API_VERSION)


@kopf.on.resume(GROUP, VERSION, "projects")
@kopf.on.create(GROUP, VERSION, "projects")
@kopf.on.update(GROUP, VERSION, "projects", field="spec")
def reconcile_project(body, logger, **_) -> None:
    body = kube.plain(body)
    project = Project.model_validate(body)
    spec = body.get("spec") or {}
    name = body["metadata"]["name"]
    generation = body["metadata"].get("generation", 0)
    conditions = (body.get("status") or {}).get("conditions")
    ns_name = namespace_for(project)
    existing = kube.get_namespace(ns_name)
    owners = (existing or {}).get("metadata", {}).get("ownerReferences") or []
    if existing and not any(o.get("uid") == body["metadata"]["uid"] for o in owners):
        _status(body, phase=ProjectPhase.ERROR.value, namespace="", observedGeneration=generation,
                conditions=set_condition(
                    conditions, "Ready", False, "NamespaceTaken",
                    f"Namespace {ns_name!r} already exists and belongs to something else; set spec.namespace to a free name",
                    generation))
        return
    owner = owner_reference(body)
    quota = spec.get("quota") or {}
    plurals = _plurals()
    kube.apply(identity.namespace_object(name, ns_name, owner, quota))

    wanted, unwanted = identity.role_bindings(name, ns_name, spec.get("members") or [], project.spec.enabled, owner)
    for rb in wanted:
        kube.apply(rb)
    for rb_name in unwanted:
        kube.delete(RBAC, "rolebindings", rb_name, ns_name, propagation="Background")

    rq = identity.resource_quota(name, ns_name, owner, quota, plurals)
    rq_status = None
    if rq:
        rq_status = kube.apply(rq).get("status")
    else:
        kube.delete("v1", "resourcequotas", identity.QUOTA_NAME, ns_name, propagation="Background")

    members = len(project.spec.members) if project.spec.enabled else 0
    if project.spec.enabled:
        phase, ready, reason = ProjectPhase.ACTIVE, True, "Active"
        message = f"Namespace {ns_name} is ready with {members} member(s)"
    else:
        phase, ready, reason = ProjectPhase.DISABLED, False, "Disabled"
        message = "The project is disabled (spec.enabled: false): members have no access; set spec.enabled: true to restore it"
    _status(body, phase=phase.value, namespace=ns_name, observedGeneration=generation, members=members,
            quota=identity.quota_usage(quota, rq_status, plurals),
            conditions=set_condition(conditions, "Ready", ready, reason, message, generation))
    logger.info("Project %s reconciled: namespace %s, %d member(s), %s", name, ns_name, members, phase.value)


@kopf.timer(GROUP, VERSION, "projects", interval=600, idle=600)
def resync_project(body, logger, **_) -> None:
    """Every ten minutes, put back what someone changed by hand (a RoleBinding with an
    extra subject, a deleted quota): the spec is the only source of access."""
    if not body["metadata"].get("deletionTimestamp"):
        reconcile_project(body=body, logger=logger)


@kopf.on.event("", "v1", "resourcequotas", labels={PROJECT_LABEL: kopf.PRESENT})
def quota_changed(body, labels, type, **_) -> None:
    """Copy the ResourceQuota's use into the Project's status."""
    if type == "DELETED":
        return
    project = kube.get(API_VERSION, "projects", labels[PROJECT_LABEL])
    if not project or project["metadata"].get("deletionTimestamp"):
        return
    quota = (project.get("spec") or {}).get("quota") or {}
    usage = identity.quota_usage(quota, kube.plain(body).get("status"), _plurals())
    _status(project, quota=usage)


def _remaining(namespace: str) -> list[tuple[str, str, str, bool]]:
    """(kind, plural, name, deleting) of every Stratus object left in the namespace."""
    out = []
    for res in stratus_resources(API_VERSION):
        if not res.get("namespaced") or "delete" not in res.get("verbs", []):
            continue
        for obj in kube.list_(API_VERSION, res["name"], namespace):
            out.append((res["kind"], res["name"], obj["metadata"]["name"], bool(obj["metadata"].get("deletionTimestamp"))))
    return sorted(out)


@kopf.on.delete(GROUP, VERSION, "projects")
def delete_project(body, logger, **_) -> None:
    body = kube.plain(body)
    name = body["metadata"]["name"]
    generation = body["metadata"].get("generation", 0)
    conditions = (body.get("status") or {}).get("conditions")
    ns_name = (body.get("status") or {}).get("namespace") or (body.get("spec") or {}).get("namespace") or name
    ns = kube.get_namespace(ns_name)
    ours = ns and any(o.get("uid") == body["metadata"]["uid"] for o in ns["metadata"].get("ownerReferences") or [])
    if not ours:
        return  # never created, or someone else's: nothing of ours to delete
    # 1. Members lose access first.
    for cluster_role in identity.CLUSTER_ROLES.values():
        kube.delete(RBAC, "rolebindings", cluster_role, ns_name, propagation="Background")
    # 2. Stratus objects, each with its own finalizers.
    left = _remaining(ns_name)
    if left:
        for kind, plural, obj_name, deleting in left:
            if not deleting:
                kube.delete(API_VERSION, plural, obj_name, ns_name)
        listing = [f"{kind}/{obj_name}" for kind, _, obj_name, _ in left]
        message = f"Deleting {len(left)} object(s) in namespace {ns_name} before the namespace: {', '.join(listing[:10])}"
        _status(body, phase=ProjectPhase.TERMINATING.value, remaining=listing[:100],
                conditions=set_condition(conditions, "Ready", False, "DeletingObjects", message, generation))
        raise kopf.TemporaryError(message, delay=DELETE_POLL)
    # 3. The namespace, once it holds no Stratus object.
    if ns["status"].get("phase") != "Terminating":
        kube.delete("v1", "namespaces", ns_name, uid=ns["metadata"]["uid"], propagation="Background")
    message = f"Deleting namespace {ns_name}"
    _status(body, phase=ProjectPhase.TERMINATING.value, remaining=[f"Namespace/{ns_name}"],
            conditions=set_condition(conditions, "Ready", False, "DeletingNamespace", message, generation))
    raise kopf.TemporaryError(message, delay=DELETE_POLL)
