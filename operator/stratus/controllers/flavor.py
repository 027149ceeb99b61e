"""Flavor: validated by the API server's schema and CEL rules; the operator reports it
Available so that `kubectl get flavors` says what can be used, or Invalid with reason
InvalidExtraSpecs when a known extra spec (see core.compute.extra_specs_to_domain) has a
value KubeVirt cannot express.

Where the cluster serves KubeVirt's VirtualMachineClusterInstancetype, an Available
flavor is mirrored as one of the same name (core.compute.flavor_to_instancetype), owned
by the Flavor so that deleting the flavor deletes it. An instancetype of that name that
Stratus did not create (one of KubeVirt's common instancetypes, say) is left alone, and
the flavor's Ready message says so."""

from __future__ import annotations

import kopf

from ..api.flavor import Flavor
from ..api.registry import GROUP, VERSION
from ..core.conditions import set_condition
from ..drivers import kube, kubevirt as kv
from ..core.compute import FLAVOR_LABEL, INSTANCETYPE_API, extra_specs_to_domain, flavor_to_instancetype
from ..core.quantity import parse_bytes


@kopf.on.resume(GROUP, VERSION, "flavors")
@kopf.on.create(GROUP, VERSION, "flavors")
@kopf.on.update(GROUP, VERSION, "flavors", field="spec")
def reconcile_flavor(body, patch, **_) -> None:
    flavor = Flavor.model_validate(kube.plain(body))
    generation = body["metadata"].get("generation", 0)
    conditions = body.get("status", {}).get("conditions")
    _, problems = extra_specs_to_domain(flavor.spec.extra_specs, flavor.spec.vcpus)
    try:
        parse_bytes(flavor.spec.ram)
        parse_bytes(flavor.spec.disk)
    except ValueError as exc:  # the schema pattern should make this unreachable
        patch.status["phase"] = "Invalid"
        patch.status["conditions"] = set_condition(conditions, "Ready", False, "InvalidSize", str(exc), generation)
    else:
        if problems:
            patch.status["phase"] = "Invalid"
            patch.status["conditions"] = set_condition(
                conditions, "Ready", False, "InvalidExtraSpecs",
                "spec.extraSpecs: " + "; ".join(problems) + ". Fix them; servers keep their current VM until then",
                generation)
            patch.status["observedGeneration"] = generation
            return
        instancetype, note = _mirror(kube.plain(body))
        patch.status["phase"] = "Available"
        patch.status["instancetype"] = instancetype
        patch.status["conditions"] = set_condition(
            conditions, "Ready", True, "Available", "The flavor can be used by servers" + note, generation
        )
    patch.status["observedGeneration"] = generation


INSTANCETYPES = "virtualmachineclusterinstancetypes"


def _mirror(flavor: dict) -> tuple[str, str]:
    """Publish the flavor as a VirtualMachineClusterInstancetype where the cluster has
    that kind. Returns (its name or "", a note for the Ready message)."""
    if not kv.has_resource(INSTANCETYPE_API, INSTANCETYPES):
        return "", ""
    name = flavor["metadata"]["name"]
    existing = kube.get(INSTANCETYPE_API, INSTANCETYPES, name)
    if existing is not None and ((existing["metadata"].get("labels") or {}).get(FLAVOR_LABEL) != name):
        return "", (f"; not published as a KubeVirt instancetype: VirtualMachineClusterInstancetype {name!r} "
                    "already exists and is not Stratus's (rename the flavor to publish it)")
    kube.apply(flavor_to_instancetype(flavor), INSTANCETYPES)
    return name, f"; published as KubeVirt VirtualMachineClusterInstancetype {name!r}"
