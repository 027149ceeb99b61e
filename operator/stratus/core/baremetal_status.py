"""Bare metal, the pure half of the node loop: a BareMetalNode's spec and annotations to
the state machine's ``Desired``, its status to the machine's ``Status`` and back, the
conditions and phase per state, the events for history entries, and what the node's
Kubernetes Node should become. No I/O: ``loops.baremetal_node`` reads the object and the
BMC, asks ``core.baremetal.step`` and these, and writes through drivers/.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..api.baremetalnode import (
    DETACHED_ANNOTATION,
    NODE_LABEL,
    PAUSED_ANNOTATION,
    REBOOT_ANNOTATION,
    REINSPECT_ANNOTATION,
    BareMetalNode,
)
from . import baremetal as bm
from .conditions import set_condition
from .hypervisor import HypervisorShape, hypervisor_node

PHASES = {
    bm.State.REGISTERING: "Registering",
    bm.State.INSPECTING: "Inspecting",
    bm.State.AVAILABLE: "Available",
    bm.State.PROVISIONING: "Provisioning",
    bm.State.PROVISIONED: "Provisioned",
    bm.State.DEPROVISIONING: "Deprovisioning",
    bm.State.DETACHED: "Detached",
    bm.State.PAUSED: "Paused",
    bm.State.DELETING: "Deleting",
    bm.State.DELETED: "Deleting",
}


class ConfigProblem(Exception):
    """Something only the user can fix (no Secret, bad address): a condition and a retry."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


class ImageNotReady(Exception):
    reason = "ImageNotReady"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def image_key(node: BareMetalNode) -> str | None:
    img = node.spec.image
    if img is None:
        return None
    if img.url:
        return f"{img.url}#{img.checksum_type.value}:{img.checksum}"
    return f"image:{img.namespace}/{img.name}"


def desired_of(body: dict, node: BareMetalNode) -> bm.Desired:
    annotations = body["metadata"].get("annotations") or {}
    reboot = None
    if REBOOT_ANNOTATION in annotations:
        mode = annotations[REBOOT_ANNOTATION] or "hard"
        reboot = bm.Request(id=f"{mode}", mode="soft" if mode == "soft" else "hard")
    reinspect = bm.Request(id="reinspect") if REINSPECT_ANNOTATION in annotations else None
    consumer = None
    if node.spec.consumer_ref:
        ref = node.spec.consumer_ref
        consumer = f"{ref.kind}/{ref.namespace + '/' if ref.namespace else ''}{ref.name}"
    return bm.Desired(
        online=node.spec.online,
        image=image_key(node),
        consumer=consumer,
        inspect=node.spec.inspect,
        detached=DETACHED_ANNOTATION in annotations,
        paused=PAUSED_ANNOTATION in annotations,
        deleting=bool(body["metadata"].get("deletionTimestamp")),
        reboot=reboot,
        reinspect=reinspect,
    )


def machine_status(status: dict) -> bm.Status:
    machine = dict(status.get("machine") or {})
    machine["history"] = status.get("operationHistory") or []
    if status.get("hardware") is not None:
        machine["hardware"] = status["hardware"]
    if status.get("error"):
        machine["error"] = status["error"]
    machine["errorCount"] = status.get("errorCount", 0)
    return bm.Status.from_dict(machine)


def _camel(word: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in word.replace("_", "-").split("-") if part)


def phase_of(state: bm.State) -> str:
    return "Error" if state.is_error else PHASES[state]


def conditions_of(old: list | None, s: bm.Status, generation: int, config_problem: ConfigProblem | None) -> list[dict]:
    state = s.state or bm.State.REGISTERING
    err = s.error if state.is_error else None
    conds = old
    # Registered: the BMC address and credentials work.
    if config_problem is not None:
        conds = set_condition(conds, "Registered", False, config_problem.reason, config_problem.message, generation)
    elif state == bm.State.REGISTRATION_ERROR and err:
        conds = set_condition(conds, "Registered", False, err.reason, err.message, generation)
    elif s.registered and state not in (bm.State.DETACHED, bm.State.PAUSED):
        conds = set_condition(conds, "Registered", True, "BMCReachable", "The BMC answers and accepts the credentials", generation)
    elif not s.registered:
        conds = set_condition(conds, "Registered", "Unknown", "Registering", "Checking the BMC address and credentials", generation)
    # Inspected
    if s.hardware is not None:
        conds = set_condition(conds, "Inspected", True, "Inspected", "The hardware inventory was read from the BMC", generation)
    elif state == bm.State.INSPECTION_ERROR and err:
        conds = set_condition(conds, "Inspected", False, err.reason, err.message, generation)
    else:
        conds = set_condition(conds, "Inspected", "Unknown", "NotInspected", "The hardware inventory has not been read yet", generation)
    # Provisioned
    if state == bm.State.PROVISIONED:
        conds = set_condition(conds, "Provisioned", True, "Provisioned", f"Image {s.image} is written and boots from disk", generation)
    elif state == bm.State.PROVISIONING:
        conds = set_condition(conds, "Provisioned", False, "Provisioning",
                              f"Booting the deploy ramdisk for attempt {s.attempt}; waiting for its callback", generation)
    elif state in (bm.State.PROVISIONING_ERROR, bm.State.DEPROVISIONING_ERROR) and err:
        conds = set_condition(conds, "Provisioned", False, err.reason, err.message, generation)
    elif state == bm.State.DEPROVISIONING:
        conds = set_condition(conds, "Provisioned", False, "Deprovisioning", "Powering off and removing the boot configuration", generation)
    elif state not in (bm.State.DETACHED, bm.State.PAUSED, bm.State.POWER_MANAGEMENT_ERROR, bm.State.REGISTRATION_ERROR):
        conds = set_condition(conds, "Provisioned", False, "NotProvisioned", "No image is provisioned", generation)
    # Ready
    if config_problem is not None:
        conds = set_condition(conds, "Ready", False, config_problem.reason, config_problem.message, generation)
    elif err:
        conds = set_condition(conds, "Ready", False, err.reason,
                              f"{state.value}: {err.message} (failure {s.error_count}; retrying with backoff)", generation)
    elif state.is_steady:
        conds = set_condition(conds, "Ready", True, _camel(state.value), f"The node is {state.value}", generation)
    else:
        conds = set_condition(conds, "Ready", False, _camel(state.value), f"The node is {state.value}", generation)
    return conds


def status_of(body: dict, s: bm.Status, *, power: bm.Power | None, power_checked: str | None,
              config_problem: ConfigProblem | None, node_name: str | None) -> dict:
    old = body.get("status") or {}
    generation = body["metadata"].get("generation", 0)
    state = s.state or bm.State.REGISTERING
    raw = s.to_dict()
    history = raw.pop("history", [])
    hardware = raw.pop("hardware", None)
    error = raw.pop("error", None)
    error_count = raw.pop("errorCount", 0)
    out: dict[str, Any] = {
        "observedGeneration": generation,
        "provisioningState": state.value,
        "phase": "Error" if config_problem else phase_of(state),
        "conditions": conditions_of(old.get("conditions"), s, generation, config_problem),
        "operationHistory": history,
        "machine": raw,
        "hardware": hardware,
        "error": error,
        "errorCount": error_count,
    }
    if power is not None:
        out["poweredOn"] = power == bm.Power.ON
        out["powerState"] = "On" if power == bm.Power.ON else "Off"
    if power_checked:
        out["lastPowerCheck"] = power_checked
    if s.image:
        out["provisioning"] = {"imageUrl": s.image.split("#", 1)[0] if not s.image.startswith("image:") else s.image,
                               "checksum": s.image.split("#", 1)[1] if "#" in s.image else "", "attempt": s.attempt}
    if node_name is not None:
        out["nodeName"] = node_name
    return out


def status_changes(old: dict, new: dict) -> dict:
    """The fields of ``new`` to write over ``old``: those that differ, except that
    ``lastPowerCheck`` alone (it changes on every poll) is not worth a write; it goes
    along with the next real change."""
    changed = {k: v for k, v in new.items() if old.get(k) != v}
    return {} if set(changed) <= {"lastPowerCheck"} else changed


def history_events(entries: list[bm.HistoryEntry]) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the event for each history entry (Warning for errors)."""
    out = []
    for e in entries:
        if e.event == "error":
            reason = e.message.split(":", 1)[0] if e.message else "Error"
            type_ = "Warning"
        else:
            reason, type_ = _camel(e.event) or "Transition", "Normal"
        moved = f"{e.from_state.value if e.from_state else 'new'} -> {e.to_state.value}"
        text = f"{moved}: {e.message}" if e.message else moved
        if e.actions:
            text += f" [{', '.join(e.actions)}]"
        out.append((type_, reason[:128], text[:1024]))
    return out


# -- the hypervisor's Kubernetes Node ----------------------------------------------------------

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
UNLINKED = (bm.State.PAUSED, bm.State.DETACHED)


@dataclasses.dataclass(frozen=True)
class NodeSync:
    """What to do to the Node named like the BareMetalNode, in this order: delete it,
    register it as a kwok node (``register``: managed while on) and mark it NotReady,
    or label it; and what ``status.nodeName`` becomes (None: leave it as it is)."""

    delete: bool = False
    register: bool | None = None
    mark_not_ready: bool = False
    label: bool = False
    node_name: str | None = None


def node_sync(name: str, *, hypervisor: bool, state: bm.State | None, power: bm.Power | None, mode: str,
              existing: dict | None) -> NodeSync:
    """Make the Node follow the machine. Only a provisioned hypervisor has a Node. On a
    real cluster (``mode`` external) its kubelet registers it and Stratus adds the label;
    with ``mode`` kwok Stratus registers it: managed by kwok (Ready) while the machine is
    on, unmanaged and NotReady while it is off; kwok decides whether it plays a Node's
    kubelet when the Node appears, so a change of power re-registers it."""
    meta = (existing or {}).get("metadata") or {}
    ours = existing is not None and (meta.get("labels") or {}).get(NODE_LABEL) == name
    if not (hypervisor and state == bm.State.PROVISIONED):
        linked = state not in UNLINKED
        return NodeSync(delete=ours and mode == "kwok" and linked, node_name="" if linked else None)
    if mode == "kwok":
        on = power == bm.Power.ON
        if existing is None and not on:
            return NodeSync(node_name="")
        managed = existing is not None and bool((meta.get("annotations") or {}).get(KWOK_ANNOTATION))
        return NodeSync(delete=existing is not None and managed != on, register=on, mark_not_ready=not on, node_name=name)
    if existing is None:
        return NodeSync(node_name="")
    return NodeSync(label=not ours, node_name=name)


def kwok_node(name: str, bmn: str, ready: bool) -> dict:
    """The Node of a hypervisor on the local control plane (kwok plays its kubelet only
    while ``ready``)."""
    node = hypervisor_node(name, HypervisorShape(), labels={NODE_LABEL: bmn})
    if not ready:
        node["metadata"]["annotations"] = {}
    return node


def powered_off_node_status(name: str, at: str) -> dict:
    """The status of a powered-off hypervisor's Node: NotReady, saying why."""
    return {"conditions": [{"type": "Ready", "status": "False", "reason": "BareMetalPoweredOff",
                            "message": f"BareMetalNode {name} is powered off (BMC)",
                            "lastHeartbeatTime": at, "lastTransitionTime": at}]}


# -- the image to write -----------------------------------------------------------------------


def image_source(node: BareMetalNode, image: dict | None) -> tuple[str, str, str]:
    """(url, checksum, checksum type) of the node's image; ``image`` is the Image object
    it names (None when absent; not looked at for a URL source)."""
    img = node.spec.image
    assert img is not None
    if img.url:
        return img.url, img.checksum or "", img.checksum_type.value
    if image is None:
        raise ImageNotReady(f"Image {img.namespace}/{img.name} does not exist")
    status = image.get("status") or {}
    if str(status.get("phase", "")).lower() != "active":
        raise ImageNotReady(f"Image {img.namespace}/{img.name} is {status.get('phase') or 'not active yet'}")
    source = status.get("dataVolumeSource") or {}
    url = ((source.get("http") or {}).get("url")) or status.get("downloadUrl") or ""
    if not url:
        raise ImageNotReady(f"Image {img.namespace}/{img.name} has no http URL to write from")
    return url, status.get("checksum", ""), "sha256"
