"""Policy rules -> ValidatingAdmissionPolicy + binding. Pure: no I/O.

A rule (the spec of a PolicyRule or ClusterPolicyRule, wire form) becomes one policy
and one binding, both named after the rule:

- `stratus-rule-<namespace>-<name>` for a PolicyRule, bound with a namespaceSelector on
  `kubernetes.io/metadata.name`, so it applies in that namespace only;
- `stratus-clusterrule-<name>` for a ClusterPolicyRule, bound to every namespace with
  the label `stratus.dev/project`.

Templates are compiled here too. MaxFlavor needs the Flavors as they are now (a policy
cannot look another object up), so the controller recompiles such rules when a Flavor
changes; the expression lists the flavors that fit.
"""

from __future__ import annotations

import hashlib
import json

from ..api.registry import GROUP, LABEL_PREFIX
from .quantity import format_bytes, parse_bytes

ADMISSION = "admissionregistration.k8s.io/v1"
RULE_LABEL = f"{LABEL_PREFIX}/policy-rule"
PROJECT_LABEL = f"{LABEL_PREFIX}/project"

#: An UPDATE that does not touch spec (finalizers, labels, status through the main
#: resource) is never judged: rules govern what users ask for, not housekeeping.
SPEC_CHANGES_ONLY = {
    "name": "spec-changes-only",
    "expression": "request.operation != 'UPDATE' || !has(object.spec) || !has(oldObject.spec) || object.spec != oldObject.spec",
}


class InvalidRule(ValueError):
    """The rule cannot be compiled; the message says which field to fix."""


def cel_string(value: str) -> str:
    """A CEL string literal (JSON's escaping is valid CEL)."""
    return json.dumps(value)


def cel_list(values: list[str]) -> str:
    return "[" + ", ".join(cel_string(v) for v in values) + "]"


def flavors_within(flavors: list[dict], max_vcpus: int | None, max_ram: str | None) -> list[str]:
    """Names of the Flavors no larger than the limits (Flavor objects, wire form)."""
    limit_ram = parse_bytes(max_ram) if max_ram else None
    out = []
    for flavor in flavors:
        spec = flavor.get("spec") or {}
        try:
            vcpus, ram = int(spec.get("vcpus", 0)), parse_bytes(spec.get("ram", "0"))
        except ValueError:
            continue
        if (max_vcpus is None or vcpus <= max_vcpus) and (limit_ram is None or ram <= limit_ram):
            out.append(flavor["metadata"]["name"])
    return sorted(out)


def compile_template(template: dict, flavors: list[dict]) -> tuple[dict, str, str]:
    """(match, expression, default message) of a named rule."""
    name = template["name"]
    if name == "MaxFlavor":
        max_vcpus, max_ram = template.get("maxVcpus"), template.get("maxRam")
        allowed = flavors_within(flavors, max_vcpus, max_ram)
        limits = " and ".join(p for p in (f"{max_vcpus} vCPUs" if max_vcpus else "",
                                          f"{format_bytes(parse_bytes(max_ram))} RAM" if max_ram else "") if p)
        return ({"resources": ["servers"]}, f"object.spec.flavor in {cel_list(allowed)}",
                f"spec.flavor: Servers may use flavors of at most {limits}")
    if name == "ImageRegistries":
        registries = [r.rstrip("/") for r in template.get("registries") or []]
        if not registries:
            raise InvalidRule("spec.template.registries must list at least one registry")
        expr = (f"!has(object.spec.containerDisk) || "
                f"{cel_list(registries)}.exists(r, object.spec.containerDisk.startsWith(r + '/'))")
        return ({"resources": ["servers"]}, expr,
                f"spec.containerDisk: images may come only from {', '.join(registries)}")
    if name == "NoPublicBuckets":
        expr = ("(!has(object.spec.public) || object.spec.public != true) && "
                "(!has(object.spec.access) || object.spec.access != 'public')")
        return ({"resources": ["buckets"]}, expr, "buckets may not be public")
    raise InvalidRule(f"spec.template.name: unknown template {name!r}")


def policy_name(name: str, namespace: str | None) -> str:
    """A stable, valid object name for the policy and binding of a rule."""
    full = f"stratus-rule-{namespace}-{name}" if namespace else f"stratus-clusterrule-{name}"
    if len(full) <= 253:
        return full
    return full[:240] + "-" + hashlib.sha256(full.encode()).hexdigest()[:12]


def compile_rule(spec: dict, name: str, namespace: str | None, flavors: list[dict] = (),
                 owner: dict | None = None) -> tuple[dict, dict, str]:
    """(ValidatingAdmissionPolicy, binding, expression) for one rule."""
    template = spec.get("template")
    if template:
        match, expression, message = compile_template(template, list(flavors))
        match = {**match, **(spec.get("match") or {})}
        message = spec.get("message") or message
    else:
        match, expression, message = spec.get("match"), spec.get("expression"), spec.get("message")
        if not match or not match.get("resources"):
            raise InvalidRule("spec.match.resources is required with spec.expression (e.g. [servers])")
        if not message:
            raise InvalidRule("spec.message is required with spec.expression")
    pname = policy_name(name, namespace)
    label_value = f"{namespace}.{name}" if namespace else name
    labels = {RULE_LABEL: label_value[:63] if len(label_value) <= 63 else hashlib.sha256(label_value.encode()).hexdigest()[:63]}
    meta = {"name": pname, "labels": labels}
    if owner:
        meta["ownerReferences"] = [owner]
    policy = {
        "apiVersion": ADMISSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": dict(meta),
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": list(match.get("apiGroups") or [GROUP]),
                "apiVersions": ["*"],
                "operations": list(match.get("operations") or ["CREATE", "UPDATE"]),
                "resources": list(match["resources"]),
            }]},
            "matchConditions": [SPEC_CHANGES_ONLY],
            "validations": [{"expression": expression, "message": message, "reason": "Forbidden"}],
        },
    }
    if namespace:
        selector = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    else:
        selector = {"matchExpressions": [{"key": PROJECT_LABEL, "operator": "Exists"}]}
    binding = {
        "apiVersion": ADMISSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": dict(meta),
        "spec": {
            "policyName": pname,
            "validationActions": [spec.get("enforcement") or "Deny"],
            "matchResources": {"namespaceSelector": selector},
        },
    }
    return policy, binding, expression
