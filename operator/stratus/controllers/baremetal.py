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

Where it lives.
    These handlers parse the body and hand over. The per-node loop and the boot server's
    process state are ``loops.baremetal_node``; the state machine is ``core.baremetal``;
    desired state, status, conditions, events and the Node decision are
    ``core.baremetal_status`` (table-tested); Node writes go through ``drivers.hosts``.
"""

from __future__ import annotations

import kopf

from ..api.baremetalnode import (
    DETACHED_ANNOTATION,
    PAUSED_ANNOTATION,
    REBOOT_ANNOTATION,
    REINSPECT_ANNOTATION,
    BareMetalNode,
)
from ..api.registry import GROUP, VERSION
from ..drivers import kube
from ..loops import baremetal_node as loop
from ..loops.baremetal_node import PLURAL

_seen: dict[str, tuple] = {}


@kopf.on.startup()
async def start_baremetal(logger, **_) -> None:
    await loop.start(logger)


@kopf.on.cleanup()
async def stop_baremetal(**_) -> None:
    await loop.stop()


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
    BareMetalNode.model_validate(kube.plain(body))
    key = _interesting(body)
    if _seen.get(name) != key:
        _seen[name] = key
        loop.WAKEUPS.wake_if_sleeping(name)


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=30.0)
async def node_daemon(name, body, stopped, logger, **_) -> None:
    BareMetalNode.model_validate(kube.plain(body))
    await loop.run(name, stopped, logger)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def node_deleted(name, body, logger, **_) -> None:
    """Hold the finalizer until the machine is deprovisioned and powered off."""
    BareMetalNode.model_validate(kube.plain(body))
    await loop.finalize(name, logger)
