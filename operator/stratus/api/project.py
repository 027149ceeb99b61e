"""Project (Keystone): a tenant. A cluster-scoped object that owns one namespace.

The foundation creates and owns the labelled namespace and reports it in status; the
identity issue adds members' RoleBindings, quota and usage, tokens and policy.
"""

from __future__ import annotations

import enum

from kube_custom_resource import CustomResource, Scope
from pydantic import Field

from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, LabelName, Quantity, StatusBase, printer
from .registry import VERSION


class Role(str, enum.Enum):
    ADMIN = "admin"
    MEMBER = "member"
    READER = "reader"


class MemberKind(str, enum.Enum):
    USER = "User"
    GROUP = "Group"
    SERVICE_ACCOUNT = "ServiceAccount"


class Member(BaseModel):
    kind: MemberKind = Field(MemberKind.USER, description="User, Group or ServiceAccount (namespace/name).")
    name: str = Field(..., min_length=1, max_length=253, description="The user, group or service account name.")
    role: Role = Field(Role.MEMBER, description="admin, member or reader.")


class Quota(BaseModel):
    servers: int | None = Field(None, ge=0, description="Most servers in the project.")
    vcpus: int | None = Field(None, ge=0, description="Most vCPUs over all servers.")
    memory: Quantity | None = Field(None, description="Most memory over all servers, e.g. \"64Gi\".")
    volumes: int | None = Field(None, ge=0, description="Most volumes.")
    volume_gigabytes: int | None = Field(None, ge=0, description="Most GiB over all volumes.")


class ProjectSpec(BaseModel):
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


class ProjectStatus(StatusBase):
    """phase: Active, Disabled, Terminating or Error."""

    namespace: str = Field("", description="The namespace that holds the project's objects.")


class Project(
    CustomResource,
    version=VERSION,
    scope=Scope.CLUSTER,
    short_names=["proj"],
    subresources={"status": {}},
    printer_columns=[
        printer("Owns Namespace", ".status.namespace"),
        printer("Enabled", ".spec.enabled", "boolean"),
        PHASE_COLUMN,
        READY_COLUMN,
    ],
):
    """A tenant: a namespace with members, quota and policy."""

    spec: ProjectSpec = Field(default_factory=ProjectSpec)
    status: ProjectStatus = Field(default_factory=ProjectStatus)
