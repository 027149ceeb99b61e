"""VolumeType: reports whether its StorageClass (and snapshot class) exist, so that
`kubectl get volumetypes` says what can be used."""

from __future__ import annotations

import kopf

from ..api.registry import GROUP, VERSION
from ..api.volumetype import VolumeType
from ..core.conditions import set_condition
from ..drivers import kube


@kopf.on.resume(GROUP, VERSION, "volumetypes")
@kopf.on.create(GROUP, VERSION, "volumetypes")
@kopf.on.update(GROUP, VERSION, "volumetypes", field="spec")
@kopf.timer(GROUP, VERSION, "volumetypes", interval=60, idle=30)
def reconcile_volume_type(body, patch, **_) -> None:
    vt = VolumeType.model_validate(kube.plain(body))
    generation = body["metadata"].get("generation", 0)
    conditions = (body.get("status") or {}).get("conditions")
    sc = kube.get("storage.k8s.io/v1", "storageclasses", vt.spec.storage_class_name)
    if sc is None:
        phase, ready, reason, message = "StorageClassNotFound", False, "StorageClassNotFound", (
            f"StorageClass {vt.spec.storage_class_name!r} does not exist; create it or fix spec.storageClassName")
    elif vt.spec.allow_expansion and not sc.get("allowVolumeExpansion"):
        phase, ready, reason, message = "Available", True, "ExpansionUnavailable", (
            f"StorageClass {vt.spec.storage_class_name!r} does not allow volume expansion, so volumes of this type cannot grow")
    else:
        phase, ready, reason, message = "Available", True, "Available", "Volumes of this type can be created"
    if (body.get("status") or {}).get("phase") != phase or not conditions or conditions[0].get("reason") != reason:
        patch.status["phase"] = phase
        patch.status["conditions"] = set_condition(conditions, "Ready", ready, reason, message, generation)
        patch.status["observedGeneration"] = generation
