"""The bare-metal node loop: one asyncio loop per BareMetalNode, and the boot server it
registers boot configurations with.

A pass (``reconcile``) reads the object fresh, looks at the world (the BMC's power state
through one short IPMI session, the boot callback recorded in status), asks
``core.baremetal.step`` what to do, runs the actions in order through the IPMI driver
and the boot server (stopping at the first failure and feeding it back to the machine),
removes one-shot annotations the machine has taken, makes the Kubernetes Node follow
the machine (``core.baremetal_status.node_sync``, done through ``drivers.hosts``), writes
status and posts one event per history entry. ``run`` repeats passes: at once while the
machine moves on (at most ``MAX_PASSES`` in a row), else after the machine's requeue time
or ``power_poll`` seconds, or when woken (``WAKEUPS``: a spec or annotation change, a
boot callback). ``finalize`` runs passes for the deletion handler until the machine has
let go. The rules are in ``controllers/baremetal.py``.
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

from ..api.baremetalnode import NODE_LABEL, REBOOT_ANNOTATION, REINSPECT_ANNOTATION, BareMetalNode, BootMode, Role
from ..api.registry import API_VERSION, GROUP, VERSION
from ..core import baremetal as bm
from ..core import baremetal_status as bst
from ..core.baremetal_status import ConfigProblem, ImageNotReady
from ..drivers import hosts, ipmi, kube
from ..services import bootserver as bs
from .wakeups import Wakeups, sleep

log = logging.getLogger(__name__)

PLURAL = "baremetalnodes"
#: How long a power change may take to show at the BMC before the action counts as failed.
POWER_WAIT = 15.0
MAX_PASSES = 8  # immediate re-steps in one wake-up (transitions requeue at 0)
RETRY_CONFIG = 15.0


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


# --------------------------------------------------------------------------------------------
# Process-wide state: config, boot server, wake-ups, per-node locks
# --------------------------------------------------------------------------------------------

_config = Config()
_boot: bs.BootServer | None = None
_locks: dict[str, asyncio.Lock] = {}
WAKEUPS = Wakeups()


def _lock_for(name: str) -> asyncio.Lock:
    if name not in _locks:
        _locks[name] = asyncio.Lock()
    return _locks[name]


def wake(name: str) -> None:
    WAKEUPS.wake(name)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _iso(now: datetime.datetime) -> str:
    return now.replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def _record_callback(report: bs.Report) -> bool:
    patched = await asyncio.to_thread(
        kube.patch_status, API_VERSION, PLURAL, report.node,
        {"bootCallback": {"attempt": report.attempt, "success": report.success, "message": report.message, "at": _iso(_now())}},
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
        except ApiException as exc:
            # The ramdisk gets no user data; say why (status and reason only, never the body).
            log.warning("user data of %s: Secret %s/%s (spec.userData) cannot be read: %s %s", node, ref["namespace"],
                        ref["name"], exc.status, exc.reason)
            return None
        value = (secret.data or {}).get("userData")
        return base64.b64decode(value).decode(errors="replace") if value else None

    return await asyncio.to_thread(read)


async def start(logger) -> None:
    """Read the settings and start the boot server."""
    global _config, _boot
    _config = Config.from_env()
    settings = bs.Settings.from_env()
    _boot = bs.BootServer(settings, on_callback=_record_callback, user_data=_user_data, on_refetch=_record_refetch)
    try:
        await _boot.start()
    except OSError as err:  # a taken port must not stop the operator's other work
        logger.error("boot server cannot listen on %s:%s: %s", settings.bind, settings.http_port, err)


async def stop() -> None:
    if _boot is not None:
        await _boot.stop()


# --------------------------------------------------------------------------------------------
# Reading the BMC configuration and the world
# --------------------------------------------------------------------------------------------


def _secret(ref) -> dict:
    data = hosts.secret_data(ref.name, ref.namespace)
    if data is None:
        raise ConfigProblem("CredentialsSecretNotFound", f"Secret {ref.namespace}/{ref.name} (spec.bmc.credentials) "
                                                         "does not exist")
    return data


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
    image = None if img.url else kube.get(API_VERSION, "images", img.name, img.namespace)
    return bst.image_source(node, image)


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
# Writing status, events and the Node
# --------------------------------------------------------------------------------------------


def _write(body: dict, status: dict) -> None:
    changed = bst.status_changes(body.get("status") or {}, status)
    if changed:
        kube.patch_status(API_VERSION, PLURAL, body["metadata"]["name"], changed)


def _post(body: dict, events: list[tuple[str, str, str]]) -> None:
    for type_, reason, message in events:
        kopf.event(body, type=type_, reason=reason, message=message)


def sync_node(node: BareMetalNode, s: bm.Status, power: bm.Power | None) -> str | None:
    """Make the Kubernetes Node follow the machine; return status.nodeName (None: leave it)."""
    name = node.metadata.name
    d = bst.node_sync(name, hypervisor=node.spec.role == Role.HYPERVISOR, state=s.state, power=power,
                      mode=_config.node_mode, existing=hosts.get_node(name))
    if d.delete:
        hosts.delete_node(name)
    if d.register is not None:
        hosts.apply_node(bst.kwok_node(name, name, d.register))
    if d.mark_not_ready:
        hosts.patch_node_status(name, bst.powered_off_node_status(name, _iso(_now())))
    if d.label:
        hosts.label_node(name, {NODE_LABEL: name})
    return d.node_name


# --------------------------------------------------------------------------------------------
# One pass, and the loop
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
    desired = bst.desired_of(body, node)
    st = body.get("status") or {}
    status = bst.machine_status(st)
    now = _now()
    entries: list[bm.HistoryEntry] = []
    events: list[tuple[str, str, str]] = []
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
        await asyncio.to_thread(_write, body, bst.status_of(body, status, power=None, power_checked=None,
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
        except ipmi.BmcError as err:
            # The power action went through, but its result could not be read back: status
            # keeps the power read before the action until the next poll, and says so.
            logger.warning("power state of %s after a power action unreadable (%s): %s", name, err.reason, err.message)
            events.append(("Warning", "PowerStateUnknown",
                           f"the power state could not be read after a power action ({err.reason}: {err.message}); "
                           f"status.poweredOn is from before it until the next poll"[:1024]))
    final = decision.status
    if power is not None and final.state not in bst.UNLINKED:
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
            node_name = await asyncio.to_thread(sync_node, node, final, final.power)
        except ApiException as exc:
            logger.warning("could not update the Kubernetes Node of %s: %s", name, exc.reason)
    elif desired.deleting:
        node_name = await asyncio.to_thread(sync_node, node, final, None)

    new_status = bst.status_of(body, final, power=final.power if power is not None else None, power_checked=power_checked,
                               config_problem=None, node_name=node_name)
    await asyncio.to_thread(_write, body, new_status)
    events = bst.history_events(entries) + events
    if events:
        await asyncio.to_thread(_post, body, events)
    delay = decision.requeue_after
    if final.state in (bm.State.PAUSED, bm.State.DETACHED, bm.State.DELETED):
        return delay, final.state
    if delay is None or delay > _config.power_poll:
        delay = _config.power_poll
    return delay, final.state


async def run(name: str, stopped, logger) -> None:
    """The node's daemon: passes until the daemon is stopped."""
    event = WAKEUPS.event(name)
    passes = 0
    while not stopped:
        event.clear()
        try:
            delay, _state = await reconcile(name, logger)
        except ApiException as exc:
            logger.warning("reconcile of %s: API error %s %s; retrying", name, exc.status, exc.reason)
            delay = 5.0
        except Exception:  # noqa: BLE001 - a bug must not stop the node's loop for good
            logger.exception("reconcile of %s failed; retrying", name)
            delay = RETRY_CONFIG
        if delay == 0 and passes < MAX_PASSES:
            passes += 1
            continue
        passes = 0
        await sleep(event, delay if delay else None)


async def finalize(name: str, logger) -> None:
    """For the deletion handler: passes until the machine is deprovisioned and powered
    off (then forget the node), else a TemporaryError to be called again."""
    delay: float | None = None
    state: bm.State | None = None
    for _ in range(MAX_PASSES):
        delay, state = await reconcile(name, logger)
        if state in (bm.State.DELETED, None):
            if _boot is not None:
                _boot.unregister(name)
            WAKEUPS.forget(name)
            _locks.pop(name, None)
            return
        if delay:
            break
    raise kopf.TemporaryError(f"node {name} is {state.value if state else 'unknown'}; waiting", delay=max(delay or 2.0, 2.0))
