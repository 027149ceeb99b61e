"""ServerGroup (Nova): a placement policy for the Servers that name it.

Enforced through the scheduling constraints of each member's VM (copied by KubeVirt
onto the virt-launcher Pod), so the real kube-scheduler does the placing:

    affinity            required podAffinity on the group label, per node
    anti-affinity       required podAntiAffinity on the group label, per node
    soft-affinity       preferred podAffinity (weight 100)
    soft-anti-affinity  preferred podAntiAffinity (weight 100)

A member that cannot be placed under a hard policy stays BUILD with reason
Unschedulable and the scheduler's message, as Nova reports NoValidHost. The policy
cannot be changed (as in Nova): create another group.
"""

from __future__ import annotations

import enum

from kube_custom_resource import CustomResource
from pydantic import Field

from .common import READY_COLUMN, BaseModel, StatusBase, printer
from .registry import VERSION


class Policy(str, enum.Enum):
    AFFINITY = "affinity"
    ANTI_AFFINITY = "anti-affinity"
    SOFT_AFFINITY = "soft-affinity"
    SOFT_ANTI_AFFINITY = "soft-anti-affinity"


class ServerGroupSpec(BaseModel):
    policy: Policy = Field(
        ...,
        description="affinity, anti-affinity, soft-affinity or soft-anti-affinity. Cannot be changed.",
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "spec.policy cannot be changed; create a new server group"}]
        },
    )


class ServerGroupStatus(StatusBase):
    members: list[str] = Field(default_factory=list, description="Servers in the group.")
    nodes: list[str] = Field(default_factory=list, description="Nodes the members run on.")


class ServerGroup(
    CustomResource,
    version=VERSION,
    short_names=["sg"],
    subresources={"status": {}},
    printer_columns=[
        printer("Policy", ".spec.policy"),
        printer("Members", ".status.members"),
        READY_COLUMN,
    ],
):
    """A placement policy for servers."""

    spec: ServerGroupSpec
    status: ServerGroupStatus = Field(default_factory=ServerGroupStatus)
