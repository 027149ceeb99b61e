"""Metering (Ceilometer): keeps the exporter's index and the usage tracker current from
watch events, closes intervals into the signed ledger, and serves /metrics.

Design decisions
================

Events, not polling.
    One ``kopf.on.event`` handler per kind of :data:`stratus.services.metrics.KINDS`
    turns every watch event (the initial listing included) into an index entry and,
    when the usage-relevant part changed, a tracker observation. A ``kopf.index`` maps
    namespaces to the Project that labelled them; kopf fills indexes before it runs any
    other handler, so no object is ever attributed to the wrong project at start-up.
    Kinds whose CRD is absent are warned about by kopf and watched once the CRD
    appears; ``STRATUS_METER_KINDS`` (comma-separated plurals) narrows the set.

When a transition happened.
    The tracker is fed the time the object itself records, not the time the event
    arrived: a Server entering or leaving ACTIVE flips its Ready condition, whose
    ``lastTransitionTime`` is the instant billing starts or stops; a deletion counts
    from ``metadata.deletionTimestamp``; a new object from its creation (or its last
    transition). Only a change of quantity without a change of running state (a
    resize, a bucket growing) has no recorded instant and is taken at the event's
    arrival. Kubernetes timestamps are whole seconds, as the tracker is, so a server's
    bill equals its ACTIVE periods measured from its own status to the second.

Closing intervals.
    A thread wakes every few seconds and closes every interval that ended more than
    ``STRATUS_METERING_GRACE`` seconds ago (late events for the interval land first),
    through :func:`stratus.core.ledger.close_due`: compute, append the signed record,
    commit in the tracker, save the tracker state. Interval length is
    ``STRATUS_METERING_INTERVAL`` seconds (3600 by default). A storage error is logged,
    counted in ``stratus_ledger_errors_total`` and retried on the next tick; nothing
    is skipped.

Restarts and crashes lose nothing and duplicate nothing.
    The tracker state is saved (atomically: temporary file, fsync, rename) after each
    close, at most a second after any other change, and before a deletion handler
    returns. At start the state is loaded and aligned with each chain's head
    (``Ledger.resume``): a crash after a record was written but before the state was
    saved drops exactly the recorded usage, and record ids are the interval start, so
    closing an interval twice yields the same record or adopts the stored one. What
    the saved state may lack (at most a second of changes) is re-derived from the
    objects themselves, whose transition timestamps the initial listing replays.
    Before intervals are closed, one list per kind reconciles the tracker with the
    objects as they are (see :meth:`Metering.resync`): events can lag (kopf pauses all
    handlers for up to a minute after a crashed replica, until its peering record
    expires), and closing on stale knowledge would bill a server that stopped as
    running. Objects deleted while the operator was down stop accruing when that list
    misses them (the tracker errs towards billing what was allocated). Intervals that
    ended during the outage are each closed on start.

Where things live.
    Records: ``STRATUS_LEDGER_DIR`` (a persistent volume; in a pod
    ``/var/lib/stratus/ledger`` by default, which the chart mounts; outside a cluster
    the ledger is off until a directory is given), or a bucket when ``STRATUS_LEDGER_S3_BUCKET``
    is set (endpoint ``STRATUS_LEDGER_S3_ENDPOINT``, credentials from the usual AWS_*
    environment). Tracker state: ``.metering-state.json`` in the ledger directory,
    or ConfigMap ``stratus-metering-state`` with the S3 store. When the ledger cannot be
    opened (no writable directory, no key), the exporter still runs and the error is
    logged and counted; usage keeps accruing in memory and is recorded once it can be.

Keys.
    The Ed25519 signing key lives in Secret ``stratus-ledger-signing-key`` in the
    operator's namespace (``STRATUS_NAMESPACE``), created with a fresh key on first
    start: ``current`` names the key id that signs, ``<key id>.pem`` holds each private
    key (PKCS#8). Rotation (``stratus meter rotate-key``) adds a key and moves
    ``current``; old keys stay so their public halves keep being published. The
    public keys are published as a JWK Set in ConfigMap ``stratus-ledger-keys``
    (``jwks.json``, ``current``) in the same namespace, which the service catalog and
    ``stratus meter verify`` read. The Secret is re-read before each close, so a
    rotation takes effect at the next interval without a restart. Key material never
    reaches logs, events, status or metrics (the ``Signer`` repr hides it).

Where it lives.
    These handlers hand events to the runtime and start and stop it. The runtime and the
    closer thread are ``loops.metering_closer``; the decisions of a tick and of an
    observation's time are in ``core.metering``; keys, saved state and listings are
    ``drivers.ledger_keys`` and ``drivers.metering``. Handler instrumentation (runs,
    errors, latency of every handler) is ``controllers.instrumentation``.
"""

from __future__ import annotations

import kopf

from ..loops.metering_closer import Config, Metering, selected_kinds
from ..services.metrics import KINDS, PROJECT_LABEL, MeteredKind
from .instrumentation import instrument

_metering: Metering | None = None


def current() -> Metering | None:
    return _metering


@kopf.index("", "v1", "namespaces", labels={PROJECT_LABEL: kopf.PRESENT})
def project_namespaces(name, labels, **_):
    """namespace -> the Project that owns it (from the label the Project controller sets)."""
    return {name: labels[PROJECT_LABEL]}


@kopf.on.startup()
def start_metering(logger, **_) -> None:
    global _metering
    config = Config.from_env()
    m = Metering(config)
    n = instrument(kopf.get_default_registry(), m.health)
    logger.info("metering %s; %d handlers instrumented", ", ".join(sorted(m.kinds)), n)
    m.start()
    _metering = m


@kopf.on.cleanup()
def stop_metering(**_) -> None:
    global _metering
    if _metering is not None:
        _metering.stop()
        _metering = None


def _register(kind: MeteredKind) -> None:
    @kopf.on.event(kind.group, kind.version, kind.plural, id=f"meter-{kind.plural}")
    def meter(type, body, project_namespaces: kopf.Index, **_):
        m = _metering
        if m is not None and kind.plural in m.kinds:
            m.on_event(kind, type, body, project_namespaces)


_wanted = selected_kinds()
for _kind in KINDS:
    if not _wanted or _kind.plural in _wanted:
        _register(_kind)
