"""Flavor (Nova): a cluster-scoped size of server — vCPUs, memory, disks, extra specs.

Extra specs are free-form strings as in Nova; the compute issue maps the known ones
(dedicated CPUs, hugepages, GPUs) to KubeVirt fields. A flavor is public or limited to
named projects.
"""

from __future__ import annotations

import typing as t

from kube_custom_resource import CustomResource, Scope
from pydantic import Field

from .common import BaseModel, LabelName, Quantity, StatusBase, printer, READY_COLUMN
from .registry import VERSION


class FlavorSpec(BaseModel):
    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.isPublic || (has(self.projects) && size(self.projects) > 0)",
                    "message": "spec.projects must name at least one project when spec.isPublic is false",
                    "fieldPath": ".projects",
                },
                {
                    "rule": "!self.isPublic || !has(self.projects) || size(self.projects) == 0",
                    "message": "spec.projects is only for private flavors: set spec.isPublic to false or remove spec.projects",
                    "fieldPath": ".projects",
                },
            ]
        },
    }

    vcpus: int = Field(..., ge=1, le=1024, description="Number of virtual CPUs.")
    ram: Quantity = Field(
        ...,
        description="Guest memory, e.g. \"4Gi\" (64Mi to 16Ti).",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "quantity(self).compareTo(quantity('64Mi')) >= 0 && quantity(self).compareTo(quantity('16Ti')) <= 0",
                 "message": "spec.ram: between 64Mi and 16Ti (a quantity such as 4Gi; a bare number is bytes)"}
            ]
        },
    )
    disk: Quantity = Field("10Gi", description="Root disk size, e.g. \"20Gi\".")
    ephemeral: Quantity | None = Field(None, description="Size of an extra ephemeral disk, if any.")
    extra_specs: dict[str, t.Annotated[str, Field(max_length=255)]] = Field(
        default_factory=dict, description="Nova-style extra specs, e.g. hw:cpu_policy: dedicated."
    )
    is_public: bool = Field(True, description="Whether every project may use this flavor.")
    projects: list[LabelName] = Field(
        default_factory=list, max_length=256, description="Projects allowed to use a private flavor."
    )


class FlavorStatus(StatusBase):
    """phase: Available (the flavor can be used) or Invalid."""

    instancetype: str = Field(
        "", description="The KubeVirt VirtualMachineClusterInstancetype that mirrors this flavor, when the cluster "
        "serves that kind (same name); empty otherwise, or when an instancetype of that name belongs to someone else.")


class Flavor(
    CustomResource,
    version=VERSION,
    scope=Scope.CLUSTER,
    short_names=["flv"],
    subresources={"status": {}},
    printer_columns=[
        printer("VCPUs", ".spec.vcpus", "integer"),
        printer("RAM", ".spec.ram"),
        printer("Disk", ".spec.disk"),
        printer("Public", ".spec.isPublic", "boolean"),
        READY_COLUMN,
    ],
):
    """A size of server."""

    spec: FlavorSpec
    status: FlavorStatus = Field(default_factory=FlavorStatus)
