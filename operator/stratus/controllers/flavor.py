"""Flavor: validated by the API server's schema and CEL rules; the operator reports it
Available so that `kubectl get flavors` says what can be used, or Invalid with reason
InvalidExtraSpecs when a known extra spec (see core.compute.extra_specs_to_domain) has a
value KubeVirt cannot express."""

from __future__ import annotations

import kopf

from ..api.flavor import Flavor
from ..api.registry import GROUP, VERSION
from ..core.conditions import set_condition
from ..drivers import kube
from ..core.compute import extra_specs_to_domain
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
        patch.status["phase"] = "Available"
        patch.status["conditions"] = set_condition(
            conditions, "Ready", True, "Available", "The flavor can be used by servers", generation
        )
    patch.status["observedGeneration"] = generation
