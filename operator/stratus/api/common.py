"""Building blocks shared by the kinds: conditions, the status base, field types.

Conventions (Kubernetes API conventions): spec is desired state; status carries
`observedGeneration`, `conditions` (a list keyed by `type`, CamelCase reasons, human
messages) and a `phase` shown as a printer column. Quantities are strings such as
"4Gi"; there are no floats in spec.
"""

from __future__ import annotations

import datetime
import typing as t

from kube_custom_resource import schema
from pydantic import Field

#: A Kubernetes object name (RFC 1123 subdomain).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: A Kubernetes name usable as a label value and a namespace (RFC 1123 label).
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: A binary-suffixed quantity of bytes, as Kubernetes writes memory and storage.
BYTES_QUANTITY = r"^[1-9][0-9]*(Ki|Mi|Gi|Ti|Pi)?$"

ObjectName = t.Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
LabelName = t.Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
Quantity = t.Annotated[
    str,
    Field(
        pattern=BYTES_QUANTITY,
        max_length=32,
        description="A whole number of bytes with an optional binary suffix (Ki, Mi, Gi, Ti, Pi), e.g. \"4Gi\".",
    ),
]


class BaseModel(schema.BaseModel):
    """Base for every spec and status model: camelCase on the wire, strict on unknown fields."""

    model_config = {"extra": "forbid"}


class ConditionStatus(str, schema.Enum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(BaseModel):
    """One aspect of an object's state (metav1.Condition)."""

    type: str = Field(..., description="The aspect this condition reports on, e.g. Ready.", max_length=316)
    status: ConditionStatus = Field(..., description="True, False or Unknown.")
    reason: str = Field(
        ..., description="One CamelCase word saying why, for machines.", max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    )
    message: str = Field("", description="A human sentence saying why and what to do next.", max_length=32768)
    last_transition_time: datetime.datetime = Field(..., description="When the status last changed.")
    observed_generation: int = Field(0, ge=0, description="The spec generation this condition was computed from.")


Conditions = t.Annotated[
    list[Condition],
    Field(
        default_factory=list,
        description="The object's conditions, keyed by type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


class StatusBase(BaseModel):
    """The fields every Stratus status has. The operator owns status."""

    model_config = {"extra": "forbid"}

    observed_generation: int = Field(0, ge=0, description="The spec generation the status reflects.")
    conditions: Conditions
    phase: str = Field("", description="A one-word summary of the state, shown by kubectl get.")


def printer(name: str, json_path: str, type_: str = "string", priority: int = 0, description: str = "") -> dict:
    col = {"name": name, "type": type_, "jsonPath": json_path}
    if priority:
        col["priority"] = priority
    if description:
        col["description"] = description
    return col


READY_COLUMN = printer("Ready", '.status.conditions[?(@.type=="Ready")].status', description="Whether the object is ready")
PHASE_COLUMN = printer("Phase", ".status.phase", description="What the object is doing")
