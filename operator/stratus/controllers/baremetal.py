"""BareMetalNode: drives the state machine of `stratus.core.baremetal` against the node's
real BMC (`stratus.drivers.ipmi`) and the operator's boot server
(`stratus.services.bootserver`).

Design decisions
================

One asyncio daemon per node (kopf.daemon), level-based.
    Each pass reads the object fresh, looks at the world (the BMC's power state through
    one short IPMI session, the boot callback recorded in status), asks
    ``core.baremetal.step`` what to do, runs the actions in order (stopping at the first
    failure and feeding it back to the machine), writes status and sleeps until the
    machine's requeue time, or less: in steady states the power is read again every
    ``STRATUS_BAREMETAL_POWER_POLL`` seconds (default 30) so ``status.poweredOn`` follows
    the BMC even when someone presses the power button. A spec or annotation change (and
    a boot callback) wakes the daemon at once; the controller's own status writes do not.
    A daemon is a coroutine, not a thread: hundreds of nodes cost little, and the IPMI
    executor (``STRATUS_IPMI_CONCURRENCY``, default 16) bounds how many BMC conversations
    run at once.

Errors are states, not exceptions.
    A wrong password, an unreachable BMC, a missing credentials Secret or an unsupported
    address scheme never escape the handler: the machine turns driver errors into error
    states with backoff, and what it cannot judge (no Secret, bad address) becomes a
    condition and a retry. Conditions: ``Ready``, ``Registered`` (BMC address and
    credentials work; reason ``AuthenticationFailed``, ``BMCUnreachable``, …),
    ``Inspected`` and ``Provisioned``. Every history entry the machine produces is also
    an event on the node (Warning for errors), and ``status.operationHistory`` keeps the
    last twenty.

Deletion.
    The finalizer keeps the object until the machine reaches ``deleted``: a provisioned
    node is deprovisioned (powered off, boot config removed) first. An unreachable BMC,
    rejected credentials or a detached node do not block deletion (the history says the
    power-off was skipped).

Status contract (used by consolidation and metering).
    ``poweredOn`` (bool, from the BMC), ``powerState`` (On/Off), ``provisioningState``
    (the machine's state), ``phase`` (one word), ``nodeName`` (the Kubernetes Node of a
    hypervisor). ``spec.online`` is the only power switch.

Hypervisor nodes.
    A ``role: hypervisor`` node that is provisioned maps to the Kubernetes Node of the
    same name, labelled ``stratus.dev/baremetalnode=<name>``. On a real cluster the
    machine's kubelet registers that Node; the controller only adds the label
    (``STRATUS_BAREMETAL_NODES=external``, the default). With
    ``STRATUS_BAREMETAL_NODES=kwok`` (the local control plane) the controller creates the
    Node itself as a kwok-managed hypervisor while the machine is powered on; when the
    BMC says it is off, kwok lets go of it and the controller marks it NotReady. When
    the node is deprovisioned or deleted the simulated Node is deleted.

Secrets.
    BMC passwords are read from the Secret on every pass (a rotated password works
    without a restart), live only in the driver's credentials object and are never
    logged, put in events or status (the driver masks them in error messages too).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import logging
import os
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from ..api.baremetalnode import (
    DETACHED_ANNOTATION,
    NODE_LABEL,
    PAUSED_ANNOTATION,
    REBOOT_ANNOTATION,
    REINSPECT_ANNOTATION,
    BareMetalNode,
    BootMode,
    Role,
)
from ..api.registry import API_VERSION, GROUP, VERSION
from ..core.hypervisor import HypervisorShape, hypervisor_node
from ..core import baremetal as bm
from ..core.conditions import set_condition
from ..drivers import ipmi, kube
from ..services import bootserver as bs

log = logging.getLogger(__name__)

PLURAL = "baremetalnodes"
KIND = "BareMetalNode"
#: How long a power change may take to show at the BMC before the action counts as failed.
POWER_WAIT = 15.0
MAX_PASSES = 8  # immediate re-steps in one wake-up (transitions requeue at 0)
RETRY_CONFIG = 15.0

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


@dataclasses.dataclass(frozen=True)
class Config:
    power_poll: float = 30.0
    policy: bm.Policy = bm.Policy()
    node_mode: str = "external"  # or kwok

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        policy = bm.Policy(
            backoff_base=float(env.get("STRATUS_BAREMETAL_BACKOFF_BASE", "10")),
            backoff_max=float(env.get("STRATUS_BAREMETAL_BACKOFF_MAX", "300")),
            poll_interval=float(env.get("STRATUS_BAREMETAL_POLL_INTERVAL", "5")),
            deploy_timeout=float(env.get("STRATUS_BAREMETAL_DEPLOY_TIMEOUT", "1800")),
        )
        return cls(power_poll=float(env.get("STRATUS_BAREMETAL_POWER_POLL", "30")), policy=policy,
                   node_mode=env.get("STRATUS_BAREMETAL_NODES", "external"))


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


# --------------------------------------------------------------------------------------------
# Process-wide state: config, boot server, wake-ups, per-node locks
# --------------------------------------------------------------------------------------------

_config = Config()
_boot: bs.BootServer | None = None
_wake: dict[str, asyncio.Event] = {}
_locks: dict[str, asyncio.Lock] = {}
_seen: dict[str, tuple] = {}


def _event_for(name: str) -> asyncio.Event:
    if name not in _wake:
        _wake[name] = asyncio.Event()
    return _wake[name]


def _lock_for(name: str) -> asyncio.Lock:
    if name not in _locks:
        _locks[name] = asyncio.Lock()
    return _locks[name]


def wake(name: str) -> None:
    _event_for(name).set()


async def _record_callback(report: bs.Report) -> bool:
    at = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    patched = await asyncio.to_thread(
        kube.patch_status, API_VERSION, PLURAL, report.node,
        {"bootCallback": {"attempt": report.attempt, "success": report.success, "message": report.message, "at": at}},
    )
    wake(report.node)
    return patched is not None


async def _record_refetch(node: str, attempt: int, first: str, second: str) -> None:
    """A second address asked for the node's script: the attempt's token is dead, so the
    attempt ends as a failed boot (the state machine retries with a new token)."""
    await _record_callback(bs.Report(node, attempt, False,
                                     f"the boot script of attempt {attempt} was asked for by {second} after {first} had it; "
                                     "attempt voided (is another machine using this node's MAC address?)"))


async def _user_data(node: str) -> str | None:
    """The node's user data (Secret key `userData`), read when its ramdisk asks."""

    def read() -> str | None:
        body = kube.get(API_VERSION, PLURAL, node)
        ref = ((body or {}).get("spec") or {}).get("userData")
        if not ref:
            return None
        try:
            secret = kube.core().read_namespaced_secret(ref["name"], ref["namespace"])
        except ApiException:
            return None
        value = (secret.data or {}).get("userData")
        return base64.b64decode(value).decode(errors="replace") if value else None

    return await asyncio.to_thread(read)


@kopf.on.startup()
async def start_baremetal(logger, **_) -> None:
    global _config, _boot
    _config = Config.from_env()
    settings = bs.Settings.from_env()
    _boot = bs.BootServer(settings, on_callback=_record_callback, user_data=_user_data, on_refetch=_record_refetch)
    try:
        await _boot.start()
    except OSError as err:  # a taken port must not stop the operator's other work
        logger.error("boot server cannot listen on %s:%s: %s", settings.bind, settings.http_port, err)


@kopf.on.cleanup()
async def stop_baremetal(**_) -> None:
    if _boot is not None:
        await _boot.stop()


# --------------------------------------------------------------------------------------------
# Reading the object and the world
# --------------------------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _iso(now: datetime.datetime) -> str:
    return now.replace(microsecond=0).isoformat().replace("+00:00", "Z")


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


def _secret(ref) -> dict:
    try:
        secret = kube.core().read_namespaced_secret(ref.name, ref.namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise ConfigProblem("CredentialsSecretNotFound", f"Secret {ref.namespace}/{ref.name} (spec.bmc.credentials) "
                                                             "does not exist") from None
        raise
    return secret.data or {}


def credentials_of(node: BareMetalNode) -> ipmi.BmcCredentials:
    data = _secret(node.spec.bmc.credentials)
    try:
        user = base64.b64decode(data["username"]).decode()
        password = base64.b64decode(data["password"]).decode()
    except (KeyError, ValueError):
        ref = node.spec.bmc.credentials
        raise ConfigProblem("CredentialsSecretInvalid", f"Secret {ref.namespace}/{ref.name} needs the keys username and "
                                                        "password") from None
    return ipmi.BmcCredentials(user, password)


def client_of(node: BareMetalNode) -> ipmi.BmcClient:
    try:
        address = ipmi.parse_address(node.spec.bmc.address)
    except ipmi.InvalidAddress as err:
        raise ConfigProblem("InvalidBMCAddress", err.message) from None
    return ipmi.connect(address, credentials_of(node))


async def observe(client: ipmi.BmcClient, status: dict) -> bm.Observed:
    cb = status.get("bootCallback")
    callback = bm.BootCallback(cb["attempt"], cb.get("success", True), cb.get("message", "")) if cb else None
    try:
        power = await client.power_state()
    except ipmi.AuthenticationFailed as err:
        return bm.Observed(bmc_reachable=True, credentials_ok=False, message=err.message, boot_callback=callback)
    except ipmi.BmcError as err:
        return bm.Observed(bmc_reachable=False, message=err.message, boot_callback=callback)
    return bm.Observed(bmc_reachable=True, credentials_ok=True, power=bm.Power(power.value), boot_callback=callback)


# --------------------------------------------------------------------------------------------
# Running actions
# --------------------------------------------------------------------------------------------


def resolve_image(node: BareMetalNode) -> tuple[str, str, str]:
    """(url, checksum, checksum type) of the node's image."""
    img = node.spec.image
    assert img is not None
    if img.url:
        return img.url, img.checksum or "", img.checksum_type.value
    obj = kube.get(API_VERSION, "images", img.name, img.namespace)
    if obj is None:
        raise ImageNotReady(f"Image {img.namespace}/{img.name} does not exist")
    status = obj.get("status") or {}
    if str(status.get("phase", "")).lower() != "active":
        raise ImageNotReady(f"Image {img.namespace}/{img.name} is {status.get('phase') or 'not active yet'}")
    source = status.get("dataVolumeSource") or {}
    url = ((source.get("http") or {}).get("url")) or status.get("downloadUrl") or ""
    if not url:
        raise ImageNotReady(f"Image {img.namespace}/{img.name} has no http URL to write from")
    return url, status.get("checksum", ""), "sha256"


def boot_config(body: dict, node: BareMetalNode, attempt: int) -> bs.BootConfig:
    url, checksum, kind = resolve_image(node)
    hints = node.spec.root_device_hints.model_dump(by_alias=True, exclude_none=True) if node.spec.root_device_hints else {}
    return bs.BootConfig(node=node.metadata.name, uid=body["metadata"]["uid"], mac=node.spec.boot_mac_address, attempt=attempt,
                         image_url=url, checksum=checksum, checksum_type=kind, uefi=node.spec.boot_mode == BootMode.UEFI,
                         root_hints=hints, user_data=node.spec.user_data is not None)


async def run_action(action: bm.Action, client: ipmi.BmcClient, body: dict, node: BareMetalNode) -> Any:
    t = bm.ActionType
    if action.type == t.VALIDATE_BMC:
        return await client.validate()
    if action.type == t.INSPECT:
        return (await client.inspect()).to_dict()
    if action.type == t.SET_BOOT_DEVICE:
        return await client.set_boot_device(action.device or "network", persistent=action.persistent,
                                            uefi=node.spec.boot_mode == BootMode.UEFI)
    if action.type == t.POWER_ON:
        return await client.power_on(wait=POWER_WAIT)
    if action.type == t.POWER_OFF:
        return await client.power_off(wait=POWER_WAIT)
    if action.type == t.SOFT_OFF:
        return await client.soft_off()
    if action.type == t.REBOOT:
        return await client.reset()
    if action.type == t.PREPARE_BOOT:
        cfg = await asyncio.to_thread(boot_config, body, node, action.attempt or 0)
        if _boot is not None:
            _boot.register(cfg)
        return cfg
    if action.type == t.CLEAR_BOOT:
        if _boot is not None:
            _boot.unregister(node.metadata.name)
        return None
    raise AssertionError(f"unknown action {action}")


# --------------------------------------------------------------------------------------------
# Writing status, conditions, events
# --------------------------------------------------------------------------------------------


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


def _write(body: dict, status: dict) -> None:
    old = body.get("status") or {}
    changed = {k: v for k, v in status.items() if old.get(k) != v}
    # lastPowerCheck alone changes on every poll; write it only along with something else
    # or once a while (keeps the API server from a write per node per poll).
    if set(changed) <= {"lastPowerCheck"}:
        return
    kube.patch_status(API_VERSION, PLURAL, body["metadata"]["name"], changed)


def _post_events(body: dict, entries: list[bm.HistoryEntry]) -> None:
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
        kopf.event(body, type=type_, reason=reason[:128], message=text[:1024])


# --------------------------------------------------------------------------------------------
# Hypervisor Node mapping
# --------------------------------------------------------------------------------------------


KWOK_ANNOTATION = "kwok.x-k8s.io/node"


def _kwok_node(name: str, bmn: str, ready: bool) -> dict:
    node = hypervisor_node(name, HypervisorShape(), labels={NODE_LABEL: bmn})
    if not ready:
        node["metadata"]["annotations"] = {}
    return node


def sync_node(body: dict, node: BareMetalNode, s: bm.Status, power: bm.Power | None) -> str | None:
    """Make the Kubernetes Node follow the machine; return status.nodeName (None: leave it)."""
    name = node.metadata.name
    core = kube.core()
    wanted = node.spec.role == Role.HYPERVISOR and s.state == bm.State.PROVISIONED
    try:
        existing = core.read_node(name)
    except ApiException as exc:
        if exc.status != 404:
            raise
        existing = None
    ours = existing is not None and (existing.metadata.labels or {}).get(NODE_LABEL) == name
    if not wanted:
        if ours and _config.node_mode == "kwok" and s.state not in (bm.State.PAUSED, bm.State.DETACHED):
            core.delete_node(name)
        return "" if s.state not in (bm.State.PAUSED, bm.State.DETACHED) else None
    if _config.node_mode == "kwok":
        on = power == bm.Power.ON
        if existing is None and not on:
            return ""
        managed = existing is not None and bool((existing.metadata.annotations or {}).get(KWOK_ANNOTATION))
        if existing is not None and managed != on:
            # kwok decides whether it plays a Node's kubelet when the Node appears: delete
            # it and register it again, managed while the machine is on (Ready) and
            # unmanaged while it is off (NotReady sticks).
            core.delete_node(name)
        kube.apply(_kwok_node(name, name, on), "nodes")
        if not on:
            kube.api_client().call_api(
                f"/api/v1/nodes/{name}/status", "PATCH",
                header_params={"Content-Type": "application/merge-patch+json", "Accept": "application/json"},
                body={"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "BareMetalPoweredOff",
                                                 "message": f"BareMetalNode {name} is powered off (BMC)",
                                                 "lastHeartbeatTime": _iso(_now()), "lastTransitionTime": _iso(_now())}]}},
                response_type="object", auth_settings=["BearerToken"], _return_http_data_only=True)
        return name
    if existing is None:
        return ""
    if not ours:
        core.patch_node(name, {"metadata": {"labels": {NODE_LABEL: name}}})
    return name


# --------------------------------------------------------------------------------------------
# One pass
# --------------------------------------------------------------------------------------------


async def reconcile(name: str, logger: logging.Logger | logging.LoggerAdapter = log) -> tuple[float | None, bm.State | None]:
    """One look at the node; returns (seconds until the next look or None, state)."""
    async with _lock_for(name):
        return await _reconcile(name, logger)


async def _reconcile(name: str, logger) -> tuple[float | None, bm.State | None]:
    body = await asyncio.to_thread(kube.get, API_VERSION, PLURAL, name)
    if body is None:
        return None, None
    node = BareMetalNode.model_validate(body)
    desired = desired_of(body, node)
    st = body.get("status") or {}
    status = machine_status(st)
    now = _now()
    entries: list[bm.HistoryEntry] = []
    problem: ConfigProblem | None = None
    observed = bm.Observed()
    client: ipmi.BmcClient | None = None
    power_checked = None
    # No BMC contact while paused, detached (or being detached) or gone.
    no_bmc = desired.paused or status.state == bm.State.DELETED or (desired.detached and status.state is not None)
    if not no_bmc:
        try:
            client = await asyncio.to_thread(client_of, node)
        except ConfigProblem as err:
            problem = err
    if client is not None:
        observed = await observe(client, st)
        power_checked = _iso(now) if observed.power else None
    elif problem is not None and not desired.deleting:
        # The machine cannot act without a usable BMC configuration; say so and retry.
        await asyncio.to_thread(_write, body, status_of(body, status, power=None, power_checked=None,
                                                          config_problem=problem, node_name=None))
        return RETRY_CONFIG, status.state
    elif problem is not None:
        observed = bm.Observed(bmc_reachable=False, message=problem.message)

    decision = bm.step(desired, observed, status, now, _config.policy)
    if decision.history:
        entries.append(decision.history)
    power_changed = False
    for action in decision.actions:
        try:
            assert client is not None or action.type in (bm.ActionType.PREPARE_BOOT, bm.ActionType.CLEAR_BOOT)
            result = await run_action(action, client, body, node)  # type: ignore[arg-type]
        except (ipmi.BmcError, ImageNotReady) as err:
            logger.info("action %s failed: %s", action, getattr(err, "reason", type(err).__name__))
            failed = dataclasses.replace(observed, failure=bm.ActionFailure.of(action, err))
            decision = bm.step(desired, failed, decision.status, now, _config.policy)
            if decision.history:
                entries.append(decision.history)
            break
        power_changed |= action.type in bm.POWER_ACTIONS
        if action.type == bm.ActionType.INSPECT:
            seen = dataclasses.replace(observed, inspection=result)
            decision = bm.step(desired, seen, decision.status, now, _config.policy)
            if decision.history:
                entries.append(decision.history)
            break
    power = observed.power
    if power_changed and client is not None:
        try:
            power = bm.Power((await client.power_state()).value)
            power_checked = _iso(_now())
        except ipmi.BmcError:
            pass
    final = decision.status
    if power is not None and final.state not in (bm.State.PAUSED, bm.State.DETACHED):
        final = dataclasses.replace(final, power=power)

    # One-shot annotations: remove them once the machine has taken them.
    annotations = body["metadata"].get("annotations") or {}
    drop = {}
    if desired.reboot and final.handled_reboot == desired.reboot.id:
        drop[REBOOT_ANNOTATION] = None
        final = dataclasses.replace(final, handled_reboot=None)
    if desired.reinspect and final.handled_reinspect == desired.reinspect.id:
        drop[REINSPECT_ANNOTATION] = None
        final = dataclasses.replace(final, handled_reinspect=None)
    if drop and any(k in annotations for k in drop):
        await asyncio.to_thread(kube.custom().patch_cluster_custom_object, GROUP, VERSION, PLURAL, name,
                                {"metadata": {"annotations": drop}})

    node_name = None
    if final.state not in (bm.State.DELETED,):
        try:
            node_name = await asyncio.to_thread(sync_node, body, node, final, final.power)
        except ApiException as exc:
            logger.warning("could not update the Kubernetes Node of %s: %s", name, exc.reason)
    elif desired.deleting:
        node_name = await asyncio.to_thread(sync_node, body, node, final, None)

    new_status = status_of(body, final, power=final.power if power is not None else None, power_checked=power_checked,
                           config_problem=None, node_name=node_name)
    await asyncio.to_thread(_write, body, new_status)
    if entries:
        await asyncio.to_thread(_post_events, body, entries)
    delay = decision.requeue_after
    if final.state in (bm.State.PAUSED, bm.State.DETACHED, bm.State.DELETED):
        return delay, final.state
    if delay is None or delay > _config.power_poll:
        delay = _config.power_poll
    return delay, final.state


# --------------------------------------------------------------------------------------------
# kopf handlers
# --------------------------------------------------------------------------------------------


def _interesting(body) -> tuple:
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    keys = (REBOOT_ANNOTATION, REINSPECT_ANNOTATION, DETACHED_ANNOTATION, PAUSED_ANNOTATION)
    cb = (body.get("status") or {}).get("bootCallback") or {}
    return (meta.get("generation"), tuple((k, annotations.get(k)) for k in keys if k in annotations),
            bool(meta.get("deletionTimestamp")), cb.get("attempt"), cb.get("at"))


@kopf.on.event(GROUP, VERSION, PLURAL)
def node_changed(name, body, type, **_) -> None:
    """Wake the node's daemon on a change of spec, action annotations or callback."""
    if type == "DELETED":
        _seen.pop(name, None)
        return
    key = _interesting(body)
    if _seen.get(name) != key:
        _seen[name] = key
        if name in _wake:
            _wake[name].set()


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=30.0)
async def node_daemon(name, stopped, logger, **_) -> None:
    event = _event_for(name)
    passes = 0
    while not stopped:
        event.clear()
        try:
            delay, _state = await reconcile(name, logger)
        except ApiException as exc:
            logger.warning("reconcile of %s: API error %s; retrying", name, exc.status)
            delay = 5.0
        except Exception:  # noqa: BLE001 - a bug must not stop the node's loop for good
            logger.exception("reconcile of %s failed; retrying", name)
            delay = RETRY_CONFIG
        if delay == 0 and passes < MAX_PASSES:
            passes += 1
            continue
        passes = 0
        try:
            await asyncio.wait_for(event.wait(), timeout=delay if delay else None)
        except TimeoutError:
            pass


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def node_deleted(name, logger, **_) -> None:
    """Hold the finalizer until the machine is deprovisioned and powered off."""
    for _ in range(MAX_PASSES):
        delay, state = await reconcile(name, logger)
        if state in (bm.State.DELETED, None):
            if _boot is not None:
                _boot.unregister(name)
            _wake.pop(name, None)
            _locks.pop(name, None)
            return
        if delay:
            break
    raise kopf.TemporaryError(f"node {name} is {state.value if state else 'unknown'}; waiting", delay=max(delay or 2.0, 2.0))
