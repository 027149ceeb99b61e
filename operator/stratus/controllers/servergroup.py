"""ServerGroup: the policy itself is enforced by each member Server's VM affinity (see
core.compute.group_affinity); this controller reports the members and their nodes."""

from __future__ import annotations

import kopf

from ..api.registry import API_VERSION, GROUP, VERSION
from ..api.servergroup import ServerGroup
from ..core.conditions import set_condition
from ..drivers import kube


def refresh_group(namespace: str, name: str) -> None:
    body = kube.get(API_VERSION, "servergroups", name, namespace)
    if not body or body["metadata"].get("deletionTimestamp"):
        return
    group = ServerGroup.model_validate(body)
    members = sorted((s for s in kube.list_(API_VERSION, "servers", namespace)
                     if (s.get("spec") or {}).get("serverGroup") == name and not s["metadata"].get("deletionTimestamp")),
                     key=lambda s: s["metadata"]["name"])
    names = [s["metadata"]["name"] for s in members]
    nodes = sorted({(s.get("status") or {}).get("node") for s in members} - {None, ""})
    generation = body["metadata"].get("generation", 0)
    old = body.get("status") or {}
    status = {
        "members": names,
        "nodes": nodes,
        "phase": "Available",
        "observedGeneration": generation,
        "conditions": set_condition(old.get("conditions"), "Ready", True, "Available",
                                    f"Policy {group.spec.policy.value} applies to {len(names)} server(s)", generation),
    }
    kube.write_status(body, "servergroups", status)


@kopf.on.resume(GROUP, VERSION, "servergroups")
@kopf.on.create(GROUP, VERSION, "servergroups")
def reconcile_group(name, namespace, **_) -> None:
    refresh_group(namespace, name)


@kopf.on.event(GROUP, VERSION, "servers")
def server_changed(body, namespace, **_) -> None:
    group = (body.get("spec") or {}).get("serverGroup")
    if group:
        refresh_group(namespace, group)
