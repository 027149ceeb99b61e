"""Project: creates and owns its namespace (labelled with the project's name)."""

from __future__ import annotations

import kopf

from ..api.project import Project
from ..api.registry import GROUP, LABEL_PREFIX, VERSION
from ..core.compute import owner_reference
from ..core.conditions import set_condition
from ..drivers import kube

PROJECT_LABEL = f"{LABEL_PREFIX}/project"


def namespace_for(project: Project) -> str:
    return project.spec.namespace or project.metadata.name


@kopf.on.resume(GROUP, VERSION, "projects")
@kopf.on.create(GROUP, VERSION, "projects")
@kopf.on.update(GROUP, VERSION, "projects", field="spec")
def reconcile_project(body, patch, **_) -> None:
    project = Project.model_validate(kube.plain(body))
    generation = body["metadata"].get("generation", 0)
    conditions = body.get("status", {}).get("conditions")
    ns_name = namespace_for(project)
    existing = kube.get_namespace(ns_name)
    owners = (existing or {}).get("metadata", {}).get("ownerReferences") or []
    if existing and not any(o.get("uid") == body["metadata"]["uid"] for o in owners):
        patch.status.update(phase="Error", namespace="", observedGeneration=generation)
        patch.status["conditions"] = set_condition(
            conditions, "Ready", False, "NamespaceTaken",
            f"Namespace {ns_name!r} already exists and belongs to something else; set spec.namespace to a free name",
            generation,
        )
        return
    kube.apply_core({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": ns_name,
            "labels": {PROJECT_LABEL: project.metadata.name},
            "ownerReferences": [owner_reference(body)],
        },
    })
    if project.spec.enabled:
        phase, ready, reason, message = "Active", True, "Active", f"Namespace {ns_name} is ready"
    else:
        phase, ready, reason, message = "Disabled", False, "Disabled", "The project is disabled (spec.enabled: false)"
    patch.status.update(phase=phase, namespace=ns_name, observedGeneration=generation)
    patch.status["conditions"] = set_condition(conditions, "Ready", ready, reason, message, generation)
