"""PolicyRule / ClusterPolicyRule: compile to a ValidatingAdmissionPolicy and binding,
apply both, report Enforced; delete both when the rule goes (a finalizer sees to it,
since a cluster-scoped policy cannot be owned by a namespaced rule).

A rule the API server will not take (a CEL expression that does not compile) becomes
phase Invalid with reason InvalidExpression and the API server's own words. MaxFlavor
rules are recompiled whenever a Flavor changes.
"""

from __future__ import annotations

import kopf
from kubernetes.client.rest import ApiException

from ..api.policyrule import ClusterPolicyRule, PolicyRule
from ..api.registry import API_VERSION, GROUP, VERSION
from ..core import policy
from ..core.compute import owner_reference
from ..core.conditions import set_condition
from ..drivers import kube

MODELS = {"policyrules": PolicyRule, "clusterpolicyrules": ClusterPolicyRule}


def _flavors() -> list[dict]:
    return kube.list_(API_VERSION, "flavors")


def _api_message(exc: ApiException) -> str:
    import json

    try:
        return json.loads(exc.body).get("message") or str(exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)


def sync_rule(body: dict, plural: str) -> None:
    MODELS[plural].model_validate(body)
    meta = body["metadata"]
    namespace = meta.get("namespace")
    generation = meta.get("generation", 0)
    conditions = (body.get("status") or {}).get("conditions")
    spec = body.get("spec") or {}
    owner = owner_reference(body) if not namespace else None

    def status(**fields):
        kube.patch_status(API_VERSION, plural, meta["name"], {"observedGeneration": generation, **fields}, namespace)

    try:
        vap, binding, expression = policy.compile_rule(spec, meta["name"], namespace, _flavors(), owner)
        kube.apply(vap)
        kube.apply(binding)
    except policy.InvalidRule as exc:
        status(phase="Invalid", conditions=set_condition(conditions, "Ready", False, "InvalidRule", f"{exc}; fix the rule", generation))
        return
    except ApiException as exc:
        if exc.status not in (400, 422):
            raise
        status(phase="Invalid", conditions=set_condition(
            conditions, "Ready", False, "InvalidExpression",
            f"The API server refused the compiled policy: {_api_message(exc)}; fix spec.expression", generation))
        return
    where = f"namespace {namespace}" if namespace else "every project"
    status(phase="Enforced", policy=vap["metadata"]["name"], expression=expression,
           conditions=set_condition(conditions, "Ready", True, "Enforced",
                                    f"{spec.get('enforcement') or 'Deny'} in {where} through policy {vap['metadata']['name']}",
                                    generation))


def remove_rule(body: dict) -> None:
    meta = body["metadata"]
    name = policy.policy_name(meta["name"], meta.get("namespace"))
    kube.delete(policy.ADMISSION, "validatingadmissionpolicybindings", name, propagation="Background")
    kube.delete(policy.ADMISSION, "validatingadmissionpolicies", name, propagation="Background")


@kopf.on.resume(GROUP, VERSION, "policyrules")
@kopf.on.create(GROUP, VERSION, "policyrules")
@kopf.on.update(GROUP, VERSION, "policyrules", field="spec")
def reconcile_policy_rule(body, **_) -> None:
    sync_rule(kube.plain(body), "policyrules")


@kopf.on.resume(GROUP, VERSION, "clusterpolicyrules")
@kopf.on.create(GROUP, VERSION, "clusterpolicyrules")
@kopf.on.update(GROUP, VERSION, "clusterpolicyrules", field="spec")
def reconcile_cluster_policy_rule(body, **_) -> None:
    sync_rule(kube.plain(body), "clusterpolicyrules")


@kopf.on.delete(GROUP, VERSION, "policyrules")
@kopf.on.delete(GROUP, VERSION, "clusterpolicyrules")
def delete_policy_rule(body, **_) -> None:
    remove_rule(kube.plain(body))


@kopf.on.event(GROUP, VERSION, "flavors")
def flavor_changed(type, **_) -> None:
    """MaxFlavor rules list the flavors that fit: recompile them when Flavors change."""
    if type is None:  # the initial listing; resume handlers compile every rule anyway
        return
    for plural in ("policyrules", "clusterpolicyrules"):
        for rule in kube.list_(API_VERSION, plural):
            template = (rule.get("spec") or {}).get("template") or {}
            if template.get("name") == "MaxFlavor" and not rule["metadata"].get("deletionTimestamp"):
                sync_rule(rule, plural)
