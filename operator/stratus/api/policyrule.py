"""PolicyRule and ClusterPolicyRule (Keystone policy): allow/deny rules beyond roles,
compiled into ValidatingAdmissionPolicies (CEL) and their bindings.

A `PolicyRule` lives in a project namespace and applies there only; a
`ClusterPolicyRule` applies to every project namespace (those labelled
`stratus.dev/project`). Both share one spec:

- `match`: the kinds and operations the rule looks at (CREATE and UPDATE by default;
  an UPDATE that leaves `spec` as it was, such as a finalizer or label change, is never
  judged, so a rule never blocks the deletion of an object it would not admit today);
- exactly one of `expression` (a CEL expression over `object`, `oldObject` and
  `request`, as in a ValidatingAdmissionPolicy, that must be true for the request to be
  admitted) with `message`, or `template`: a named, parameterised rule the operator
  writes the CEL for (MaxFlavor, ImageRegistries, NoPublicBuckets);
- `enforcement`: Deny (refuse), Warn (admit with a warning) or Audit (annotate the
  audit event).

The API server returns the rule's message to the refused user. Deleting the rule
deletes its policy and binding, which lifts it. Writing PolicyRules is for project
admins only (the `stratus-admin-only` policy shipped with the roles).
"""

from __future__ import annotations

import enum

from kube_custom_resource import CustomResource, Scope
from pydantic import Field

from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, Quantity, StatusBase, printer
from .registry import GROUP, VERSION


class Enforcement(str, enum.Enum):
    DENY = "Deny"
    WARN = "Warn"
    AUDIT = "Audit"


class Operation(str, enum.Enum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"


class TemplateName(str, enum.Enum):
    MAX_FLAVOR = "MaxFlavor"
    IMAGE_REGISTRIES = "ImageRegistries"
    NO_PUBLIC_BUCKETS = "NoPublicBuckets"


class Match(BaseModel):
    api_groups: list[str] = Field(default_factory=lambda: [GROUP], max_length=16,
                                  description="API groups of the kinds the rule looks at (default stratus.dev).")
    resources: list[str] = Field(..., min_length=1, max_length=32,
                                 description="Plural resource names, e.g. servers.")
    operations: list[Operation] = Field(default_factory=lambda: [Operation.CREATE, Operation.UPDATE], min_length=1,
                                        max_length=2, description="CREATE and/or UPDATE.")


class Template(BaseModel):
    """A named rule; the operator writes its CEL (and keeps it current, e.g. as Flavors change)."""

    name: TemplateName = Field(..., description="MaxFlavor, ImageRegistries or NoPublicBuckets.")
    max_vcpus: int | None = Field(None, ge=1, description="MaxFlavor: the most vCPUs a Server's flavor may have.")
    max_ram: Quantity | None = Field(None, description="MaxFlavor: the most RAM a Server's flavor may have, e.g. \"8Gi\".")
    registries: list[str] = Field(default_factory=list, max_length=64,
                                  description="ImageRegistries: allowed registry prefixes, e.g. quay.io/containerdisks.")


class PolicyRuleSpec(BaseModel):
    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "has(self.expression) != has(self.template)",
                 "message": "set exactly one of spec.expression and spec.template"},
                {"rule": "!has(self.expression) || has(self.message)",
                 "message": "spec.message is required with spec.expression: it is what a refused user reads"},
                {"rule": "!has(self.template) || self.template.name != 'MaxFlavor' || has(self.template.maxVcpus) || has(self.template.maxRam)",
                 "message": "spec.template.maxVcpus or spec.template.maxRam is required for MaxFlavor"},
                {"rule": "!has(self.template) || self.template.name != 'ImageRegistries' || size(self.template.registries) > 0",
                 "message": "spec.template.registries must list at least one registry for ImageRegistries"},
            ]
        }
    }

    description: str = Field("", max_length=1024, description="What the rule is for.")
    enforcement: Enforcement = Field(Enforcement.DENY, description="Deny, Warn or Audit.")
    match: Match | None = Field(None, description="What the rule looks at; a template sets it when omitted.")
    expression: str | None = Field(None, min_length=1, max_length=4096,
                                   description="CEL over object, oldObject and request that must be true to admit the request.")
    message: str | None = Field(None, min_length=1, max_length=1024, description="What a refused user reads.")
    template: Template | None = Field(None, description="A named rule instead of an expression.")


class PolicyRuleStatus(StatusBase):
    """phase: Enforced, Invalid or Pending."""

    policy: str = Field("", description="The ValidatingAdmissionPolicy (and binding) compiled from the rule.")
    expression: str = Field("", description="The CEL expression in force.")


_COLUMNS = [
    printer("Enforcement", ".spec.enforcement"),
    printer("Template", ".spec.template.name"),
    printer("Message", ".spec.message", priority=1),
    PHASE_COLUMN,
    READY_COLUMN,
]


class PolicyRule(CustomResource, version=VERSION, short_names=["prule"], subresources={"status": {}},
                 printer_columns=_COLUMNS):
    """A policy rule for the project of its namespace."""

    spec: PolicyRuleSpec
    status: PolicyRuleStatus = Field(default_factory=PolicyRuleStatus)


class ClusterPolicyRule(CustomResource, version=VERSION, scope=Scope.CLUSTER, short_names=["cprule"],
                        subresources={"status": {}}, printer_columns=_COLUMNS):
    """A policy rule for every project."""

    spec: PolicyRuleSpec
    status: PolicyRuleStatus = Field(default_factory=PolicyRuleStatus)


def sample(name: str = "small-servers", **spec) -> dict:
    body = {"template": {"name": "MaxFlavor", "maxVcpus": 4, "maxRam": "8Gi"},
            "message": "Servers in this project may use flavors of at most 4 vCPUs and 8Gi"}
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PolicyRule", "metadata": {"name": name}, "spec": body}

