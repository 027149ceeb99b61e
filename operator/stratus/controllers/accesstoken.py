"""AccessToken: issue a bound, expiring ServiceAccount token for a project member and
deliver it as a kubeconfig in a Secret; revoke by deleting that Secret.

Issuing, in order (each step idempotent; a token is minted once per AccessToken):

1. the namespace's Project must list `spec.user` as a User member (else NotAMember);
2. the member's ServiceAccount (`core.identity.service_account_for`), owned by the
   Project, which the Project's RoleBinding for the member's role already names;
3. the Secret `accesstoken-<name>`, owned by the AccessToken, created empty first so
   that the token can be bound to it (TokenRequest boundObjectRef with its uid);
4. the token, checked with a TokenReview, written into the Secret as a kubeconfig;
5. a Role and RoleBinding letting the member (and nobody else but project admins) get
   that one Secret.

Revocation: deleting the AccessToken deletes its Secret before the finalizer is
released; the API server then refuses the token on its next use. A Secret deleted by
hand revokes the token too, and the AccessToken says so (reason Revoked).
"""

from __future__ import annotations

import base64
import datetime
import os

import kopf
from ..api.accesstoken import AccessToken
from ..api.registry import API_VERSION, GROUP, VERSION
from ..core import identity
from ..core.compute import owner_reference
from ..core.conditions import now, set_condition
from ..drivers import kube

RBAC = "rbac.authorization.k8s.io/v1"
TOKEN_LABEL = "stratus.dev/access-token"
#: Where kubeconfigs point; the operator's own API server address when unset.
SERVER_ENV = "STRATUS_PUBLIC_API_SERVER"
RETRY = 10


def secret_name(token: str) -> str:
    return f"accesstoken-{token}"[:253]


def cluster_access() -> identity.ClusterAccess:
    config = kube.api_client().configuration
    ca_data = None
    if config.ssl_ca_cert:
        with open(config.ssl_ca_cert, "rb") as fh:
            ca_data = base64.b64encode(fh.read()).decode()
    return identity.ClusterAccess(server=os.environ.get(SERVER_ENV) or config.host, ca_data=ca_data,
                                  insecure=not config.verify_ssl)


def _status(body: dict, **fields) -> None:
    meta = body["metadata"]
    kube.patch_status(API_VERSION, "accesstokens", meta["name"], fields, meta["namespace"])


def _fail(body: dict, reason: str, message: str, phase: str = "Failed") -> None:
    generation = body["metadata"].get("generation", 0)
    _status(body, phase=phase, observedGeneration=generation,
            conditions=set_condition((body.get("status") or {}).get("conditions"), "Ready", False, reason, message, generation))


def _project_of(namespace: str) -> dict | None:
    ns = kube.get_namespace(namespace)
    project = ((ns or {}).get("metadata", {}).get("labels") or {}).get(identity.PROJECT_LABEL)
    return kube.get(API_VERSION, "projects", project) if project else None


@kopf.on.resume(GROUP, VERSION, "accesstokens")
@kopf.on.create(GROUP, VERSION, "accesstokens")
def issue_token(body, name, namespace, logger, **_) -> None:
    body = kube.plain(body)
    token = AccessToken.model_validate(body)
    status = body.get("status") or {}
    user = token.spec.user
    sname = secret_name(name)
    if status.get("secretName"):
        # Issued before: never mint twice. A missing Secret means it was revoked by hand.
        if kube.get("v1", "secrets", sname, namespace) is None and status.get("phase") == "Active":
            _fail(body, "Revoked", f"Secret {sname} was deleted, which revoked the token; delete this AccessToken and issue a new one")
        return
    project = _project_of(namespace)
    if project is None:
        _fail(body, "NotAProject", f"Namespace {namespace} belongs to no Project; issue tokens in a project's namespace")
        return
    member = next((m for m in (project.get("spec") or {}).get("members") or []
                   if m.get("kind", "User") == "User" and m["name"] == user), None)
    if member is None:
        _fail(body, "NotAMember", f"{user!r} is not a User member of project {project['metadata']['name']}; "
                                  "add them to spec.members of the Project, then the token is issued")
        raise kopf.TemporaryError(f"{user!r} is not a member yet", delay=RETRY)
    try:
        seconds = identity.parse_duration(token.spec.ttl)
    except ValueError as exc:
        _fail(body, "InvalidTTL", f"spec.ttl: {exc}")
        return
    if not identity.MIN_TTL_SECONDS <= seconds <= identity.MAX_TTL_SECONDS:
        _fail(body, "InvalidTTL", "spec.ttl must be between 10m and 30d; issue a new AccessToken with a ttl in that range")
        return

    sa = identity.service_account_for(user)
    project_owner = owner_reference(project, controller=False)
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": sa, "namespace": namespace, "ownerReferences": [project_owner],
                            "labels": {identity.PROJECT_LABEL: project["metadata"]["name"]},
                            "annotations": {"stratus.dev/user": user}},
               "automountServiceAccountToken": False})
    owner = owner_reference(body)
    labels = {TOKEN_LABEL: name, identity.PROJECT_LABEL: project["metadata"]["name"]}
    secret = kube.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": sname, "namespace": namespace, "labels": labels, "ownerReferences": [owner]}})
    issued = kube.request_token(namespace, sa, seconds, {"apiVersion": "v1", "kind": "Secret", "name": sname,
                                                         "uid": secret["metadata"]["uid"]})
    review = kube.review_token(issued["token"])
    if not review.get("authenticated"):
        _fail(body, "TokenRejected", "The API server did not accept the token it issued; see the operator log")
        logger.error("TokenReview refused a freshly issued token for %s: %s", sa, review.get("error", ""))
        raise kopf.TemporaryError("issued token failed its review", delay=RETRY)
    config = identity.kubeconfig(cluster_access(), user, namespace, issued["token"], f"{user}@{namespace}")
    kube.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": sname, "namespace": namespace, "labels": labels, "ownerReferences": [owner],
                            "annotations": {"stratus.dev/expires-at": issued["expirationTimestamp"]}},
               "data": {"kubeconfig": identity.b64(config)}})
    kube.apply({"apiVersion": RBAC, "kind": "Role",
               "metadata": {"name": sname, "namespace": namespace, "labels": labels, "ownerReferences": [owner]},
               "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [sname], "verbs": ["get"]}]})
    kube.apply({"apiVersion": RBAC, "kind": "RoleBinding",
               "metadata": {"name": sname, "namespace": namespace, "labels": labels, "ownerReferences": [owner]},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sname},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
    generation = body["metadata"].get("generation", 0)
    _status(body, phase="Active", observedGeneration=generation, serviceAccount=sa, secretName=sname,
            role=member.get("role", "member"), expiresAt=issued["expirationTimestamp"],
            username=(review.get("user") or {}).get("username", ""),
            conditions=set_condition(status.get("conditions"), "Ready", True, "Issued",
                                     f"kubeconfig in Secret {sname} (key kubeconfig), valid until {issued['expirationTimestamp']}",
                                     generation))
    logger.info("Token issued for %s as %s until %s", user, sa, issued["expirationTimestamp"])


@kopf.timer(GROUP, VERSION, "accesstokens", interval=60, idle=30)
def expire_token(body, **_) -> None:
    body = kube.plain(body)
    status = body.get("status") or {}
    if status.get("phase") != "Active" or not status.get("expiresAt"):
        return
    expires = datetime.datetime.fromisoformat(status["expiresAt"].replace("Z", "+00:00"))
    if expires <= datetime.datetime.fromisoformat(now().replace("Z", "+00:00")):
        _fail(body, "Expired", "The token has expired; issue a new AccessToken", phase="Expired")


@kopf.on.delete(GROUP, VERSION, "accesstokens")
def revoke_token(body, name, namespace, logger, **_) -> None:
    """Delete the bound Secret now: every token bound to it stops working."""
    kube.delete("v1", "secrets", secret_name(name), namespace, propagation="Background")
    logger.info("Token %s revoked", name)
