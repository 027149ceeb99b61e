"""Project (Keystone): a tenant. A cluster-scoped object that owns one namespace.

A Project owns, and labels with its name:

- the Namespace that holds the project's objects;
- one RoleBinding per role in use (`stratus-admin`, `stratus-member`, `stratus-reader`,
  ClusterRoles shipped with the chart), whose subjects are the members with that role;
  a disabled project has no RoleBindings at all, so its members are refused by the
  API server while every object stays where it is;
- one ResourceQuota, `stratus-quota`, built from `spec.quota` (see
  `stratus.core.identity.QUOTA_RESOURCES` for the mapping); the API server refuses
  what would exceed it and names the quota and the resource in its message.

Status reports the namespace, each quota's use against its limit (copied from the
ResourceQuota's status, kept current by a watch on it), and during deletion what is
still being deleted.

Phases: Active, Disabled, Terminating, Error.
"""

from __future__ import annotations

import enum

from kube_custom_resource import CustomResource, Scope
from pydantic import Field

from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, LabelName, Quantity, StatusBase, printer
from .registry import GROUP, VERSION


class Role(str, enum.Enum):
    ADMIN = "admin"
    MEMBER = "member"
    READER = "reader"


class MemberKind(str, enum.Enum):
    USER = "User"
    GROUP = "Group"
    SERVICE_ACCOUNT = "ServiceAccount"


class Member(BaseModel):
    """One user, group or service account and its role in the project."""

    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.kind != 'ServiceAccount' || self.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')",
                    "message": "a ServiceAccount member's name is namespace/name, e.g. ci/deployer",
                    "fieldPath": ".name",
                }
            ]
        }
    }

    kind: MemberKind = Field(MemberKind.USER, description="User, Group or ServiceAccount (namespace/name).")
    name: str = Field(..., min_length=1, max_length=253, description="The user, group or service account name.")
    role: Role = Field(Role.MEMBER, description="admin, member or reader.")


class Quota(BaseModel):
    """Limits on what a project may hold; an unset field is no limit."""

    servers: int | None = Field(None, ge=0, description="Most servers in the project.")
    vcpus: int | None = Field(None, ge=0, description="Most vCPUs requested by the project's running servers.")
    memory: Quantity | None = Field(None, description="Most memory requested by the project's running servers, e.g. \"64Gi\".")
    volumes: int | None = Field(None, ge=0, description="Most volumes.")
    volume_gigabytes: int | None = Field(None, ge=0, description="Most GiB requested by all volume claims.")
    snapshots: int | None = Field(None, ge=0, description="Most volume snapshots.")
    images: int | None = Field(None, ge=0, description="Most images.")
    buckets: int | None = Field(None, ge=0, description="Most buckets.")
    bucket_bytes: Quantity | None = Field(
        None, description="Most bytes over all buckets, e.g. \"100Gi\" (enforced by the object store, not the API server)."
    )
    databases: int | None = Field(None, ge=0, description="Most databases.")
    data_clusters: int | None = Field(None, ge=0, description="Most data-processing clusters.")
    stacks: int | None = Field(None, ge=0, description="Most stacks.")


class ProjectSpec(BaseModel):
    # spec.namespace's own rule holds only while it is set; this one holds from unset too
    # (setting it later would make a second namespace while members keep the first).
    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.namespace) == has(oldSelf.namespace)",
                    "message": "spec.namespace cannot be set or removed after the project is created; create a new project instead",
                    "fieldPath": ".namespace",
                }
            ]
        }
    }

    description: str = Field("", max_length=1024, description="What the project is for.")
    enabled: bool = Field(True, description="A disabled project's members lose access; nothing is deleted.")
    namespace: LabelName | None = Field(
        None,
        description="The namespace to create and own; defaults to the project's name. Cannot be changed.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "spec.namespace cannot be changed once set; create a new project instead"}
            ]
        },
    )
    members: list[Member] = Field(
        default_factory=list,
        max_length=512,
        description="Who may use the project, and how. Each (kind, name) appears once.",
        # A map-type list: the API server itself refuses the same member twice.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["kind", "name"]},
    )
    quota: Quota = Field(default_factory=Quota, description="Limits on what the project may hold.")


class QuotaUsage(BaseModel):
    name: str = Field(..., description="The spec.quota field, e.g. servers.")
    resource: str = Field("", description="The ResourceQuota resource that enforces it, e.g. count/servers.stratus.dev.")
    used: str = Field("0", description="How much the project uses now.")
    limit: str = Field(..., description="The limit from spec.quota.")


class ProjectStatus(StatusBase):
    """phase: Active, Disabled, Terminating or Error."""

    namespace: str = Field("", description="The namespace that holds the project's objects.")
    members: int = Field(0, ge=0, description="How many members have access now (0 while disabled).")
    quota: list[QuotaUsage] = Field(
        default_factory=list,
        description="Use against each limit of spec.quota.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    remaining: list[str] = Field(
        default_factory=list, description="While the project is deleted: the objects still being deleted (kind/name)."
    )


class ProjectPhase(str, enum.Enum):
    ACTIVE = "Active"
    DISABLED = "Disabled"
    TERMINATING = "Terminating"
    ERROR = "Error"


class Project(
    CustomResource,
    version=VERSION,
    scope=Scope.CLUSTER,
    short_names=["proj"],
    subresources={"status": {}},
    printer_columns=[
        printer("Owns Namespace", ".status.namespace"),
        printer("Enabled", ".spec.enabled", "boolean"),
        printer("Members", ".status.members", "integer"),
        PHASE_COLUMN,
        READY_COLUMN,
    ],
):
    """A tenant: a namespace with members, quota and policy."""

    spec: ProjectSpec = Field(default_factory=ProjectSpec)
    status: ProjectStatus = Field(default_factory=ProjectStatus)


def sample(name: str = "demo", **spec) -> dict:
    """A Project manifest for tests and docs."""
    body = {
        "description": "A demo project",
        "members": [{"kind": "User", "name": "alice", "role": "admin"}, {"kind": "User", "name": "bob", "role": "member"}],
        "quota": {"servers": 10, "vcpus": 32, "memory": "64Gi"},
    }
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Project", "metadata": {"name": name}, "spec": body}
