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
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import gzip
import inspect
import json
import logging
import os
import pathlib
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from ..core.ledger import Keyring, Ledger, Signer, close_due
from ..core.metering import DEFAULT_INTERVAL, UsageTracker
from ..drivers import kube
from ..services.metrics import KINDS, PROJECT_LABEL, Entry, Exporter, MeteredKind, entry_from_body

log = logging.getLogger("stratus.metering")

SIGNING_SECRET = "stratus-ledger-signing-key"
KEYS_CONFIGMAP = "stratus-ledger-keys"
STATE_CONFIGMAP = "stratus-metering-state"
STATE_FILE = ".metering-state.json"
DEFAULT_LEDGER_DIR = "/var/lib/stratus/ledger"
SAVE_DELAY = 1.0  # seconds: the most a crash can lose of changes not re-derivable from objects


# --------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class Config:
    metrics_port: int = 9090
    metrics_bind: str = "127.0.0.1"
    interval: int = DEFAULT_INTERVAL
    grace: int = 30
    ledger_dir: str = DEFAULT_LEDGER_DIR
    s3_bucket: str = ""
    s3_endpoint: str = ""
    s3_prefix: str = "ledger/"
    namespace: str = "default"
    kinds: tuple[str, ...] = tuple(k.plural for k in KINDS)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        interval = int(env.get("STRATUS_METERING_INTERVAL") or DEFAULT_INTERVAL)
        if interval <= 0:
            raise ValueError("STRATUS_METERING_INTERVAL must be a positive number of seconds")
        grace = int(env.get("STRATUS_METERING_GRACE") or min(30, max(1, interval // 5)))
        kinds = tuple(k.strip() for k in (env.get("STRATUS_METER_KINDS") or "").split(",") if k.strip())
        known = {k.plural for k in KINDS}
        unknown = sorted(set(kinds) - known)
        if unknown:
            raise ValueError(f"STRATUS_METER_KINDS names unknown kinds {unknown}; known: {sorted(known)}")
        return cls(
            metrics_port=int(env.get("STRATUS_METRICS_PORT") or 9090),
            metrics_bind=env.get("STRATUS_METRICS_BIND") or "127.0.0.1",
            interval=interval,
            grace=grace,
            # In a pod the chart mounts the default; elsewhere (a developer's machine) the
            # ledger is off unless asked for, so test runs never share one directory.
            ledger_dir=env.get("STRATUS_LEDGER_DIR") or (DEFAULT_LEDGER_DIR if env.get("KUBERNETES_SERVICE_HOST")
                                                         else ""),
            s3_bucket=env.get("STRATUS_LEDGER_S3_BUCKET") or "",
            s3_endpoint=env.get("STRATUS_LEDGER_S3_ENDPOINT") or "",
            s3_prefix=env.get("STRATUS_LEDGER_S3_PREFIX") or "ledger/",
            namespace=operator_namespace(env),
            kinds=kinds or tuple(k.plural for k in KINDS),
        )


def operator_namespace(env: Mapping[str, str] = os.environ) -> str:
    """STRATUS_NAMESPACE, else the pod's own namespace, else ``default``."""
    if env.get("STRATUS_NAMESPACE"):
        return env["STRATUS_NAMESPACE"]
    try:
        return pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
    except OSError:
        return "default"


def parse_kube_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- keys


def load_keys(namespace: str, *, create: bool = True) -> tuple[Signer, Keyring, str]:
    """The current signer, a keyring of every key in the Secret, and the Secret's version.

    Creates the Secret with a fresh key when absent (a racing replica's Secret wins).
    """
    api = kube.core()
    try:
        secret = api.read_namespaced_secret(SIGNING_SECRET, namespace)
    except ApiException as e:
        if e.status != 404 or not create:
            raise
        signer = Signer.generate()
        body = {
            "metadata": {"name": SIGNING_SECRET, "labels": {"app.kubernetes.io/part-of": "stratus"}},
            "type": "Opaque",
            "data": {
                "current": base64.b64encode(signer.key_id.encode()).decode(),
                f"{signer.key_id}.pem": base64.b64encode(signer.private_pem()).decode(),
            },
        }
        try:
            api.create_namespaced_secret(namespace, body)
            log.info("created the ledger signing key %s in Secret %s/%s", signer.key_id, namespace, SIGNING_SECRET)
        except ApiException as e2:
            if e2.status != 409:
                raise
        secret = api.read_namespaced_secret(SIGNING_SECRET, namespace)
    return keys_from_secret_data(secret.data or {}) + (secret.metadata.resource_version,)


def keys_from_secret_data(data: Mapping[str, str]) -> tuple[Signer, Keyring]:
    current = base64.b64decode(data.get("current") or "").decode().strip()
    ring = Keyring()
    signer = None
    for k, v in sorted(data.items()):
        if not k.endswith(".pem"):
            continue
        s = Signer.from_pem(base64.b64decode(v))
        ring.add(s.public_key)
        if s.key_id == current:
            signer = s
    if signer is None:
        raise ValueError(f"Secret {SIGNING_SECRET}: 'current' names no key it holds")
    return signer, ring


def publish_keys(namespace: str, keyring: Keyring, current: str) -> None:
    """The public JWK Set in ConfigMap stratus-ledger-keys (the catalog reads it)."""
    kube.apply_core({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": KEYS_CONFIGMAP, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "stratus"}},
        "data": {"jwks.json": json.dumps(keyring.to_jwks(), sort_keys=True, indent=2) + "\n", "current": current},
    })


def published_keyring(namespace: str) -> Keyring:
    cm = kube.core().read_namespaced_config_map(KEYS_CONFIGMAP, namespace)
    return Keyring.from_jwks(json.loads((cm.data or {})["jwks.json"]))


# --------------------------------------------------------------------------- state stores


class FileState:
    """The tracker state as one JSON file, replaced atomically."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def load(self) -> str | None:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None

    def save(self, text: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ConfigMapState:
    """The tracker state gzipped in a ConfigMap (for the S3 store, which has no local disk)."""

    def __init__(self, namespace: str, name: str = STATE_CONFIGMAP) -> None:
        self.namespace, self.name = namespace, name

    def load(self) -> str | None:
        try:
            cm = kube.core().read_namespaced_config_map(self.name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        data = (cm.binary_data or {}).get("state.json.gz")
        return gzip.decompress(base64.b64decode(data)).decode() if data else None

    def save(self, text: str) -> None:
        blob = base64.b64encode(gzip.compress(text.encode(), 6)).decode()
        kube.apply_core({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": self.name, "namespace": self.namespace},
                         "binaryData": {"state.json.gz": blob}})


# --------------------------------------------------------------------------- the runtime


class Metering:
    """Everything metering holds while the operator runs. One instance per process."""

    def __init__(self, config: Config, exporter: Exporter | None = None) -> None:
        self.config = config
        self.exporter = exporter or Exporter()
        self.index = self.exporter.index
        self.health = self.exporter.health
        self.tracker = UsageTracker(interval=config.interval)
        self.lock = threading.RLock()
        self.ledger: Ledger | None = None
        self.state: FileState | ConfigMapState | None = None
        self.keys_version: str | None = None
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.dirty_since: float | None = None
        self.kinds = {k.plural: k for k in KINDS if k.plural in config.kinds}
        self.next_open = time.time() + 60
        self.resync_before_close = True
        self.ledger_off = False  # not configured: no tracker, no closing
        # A project new to the tracker starts no earlier than the interval the operator
        # started in: a first deployment does not bill the years before it.
        self.floor = int(time.time()) // config.interval * config.interval

    # ------------------------------------------------------------------ start / stop

    def start(self) -> None:
        if self.config.metrics_port:
            try:
                port = self.exporter.serve(self.config.metrics_port, self.config.metrics_bind)
                log.info("serving /metrics on %s:%d", self.config.metrics_bind, port)
            except OSError as e:  # a taken port must not stop the operator's other work
                log.error("cannot serve /metrics on %s:%d: %s", self.config.metrics_bind, self.config.metrics_port, e)
        if not self.config.ledger_dir and not self.config.s3_bucket:
            log.warning("usage ledger off: set STRATUS_LEDGER_DIR (or --ledger-dir) or STRATUS_LEDGER_S3_BUCKET "
                        "to record usage; /metrics still serves")
            self.ledger_off = True
            return self._start_loop()
        try:
            self.open_ledger()
        except Exception as e:  # noqa: BLE001 - degrade to exporter-only, loudly
            self.health.ledger_errors.labels("startup").inc()
            log.error("usage ledger unavailable, usage accrues in memory until it is: %s", e)
            self.ledger = None
        self._start_loop()

    def _start_loop(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="stratus-metering", daemon=True)
        self.thread.start()

    def open_ledger(self) -> None:
        from ..drivers.ledger_store import DirectoryLedgerStore, S3LedgerStore

        cfg = self.config
        if cfg.s3_bucket:
            import boto3

            client = boto3.client("s3", endpoint_url=cfg.s3_endpoint or None)
            store = S3LedgerStore(client, cfg.s3_bucket, cfg.s3_prefix)
            self.state = ConfigMapState(cfg.namespace)
            where = f"bucket {cfg.s3_bucket}"
        else:
            root = pathlib.Path(cfg.ledger_dir)
            root.mkdir(parents=True, exist_ok=True)
            if not os.access(root, os.W_OK):
                raise PermissionError(f"ledger directory {root} is not writable (set STRATUS_LEDGER_DIR)")
            store = DirectoryLedgerStore(root)
            self.state = FileState(root / STATE_FILE)
            where = f"directory {root}"
        signer, ring, version = load_keys(cfg.namespace)
        publish_keys(cfg.namespace, ring, signer.key_id)
        self.keys_version = version
        ledger = Ledger(store, signer)
        with self.lock:
            text = self.state.load() if not self.tracker.projects() else None
            if text:
                try:
                    loaded = UsageTracker.loads(text)
                except ValueError as e:
                    raise ValueError(f"the saved metering state cannot be read: {e}") from e
                if loaded.interval == cfg.interval:
                    self.tracker = loaded
                else:
                    log.warning("metering interval changed from %ds to %ds: starting a new tracker from the "
                                "ledger heads", loaded.interval, cfg.interval)
            # Observations made before the ledger opened are kept: merge them in.
            ledger.resume(self.tracker, sorted(set(self.tracker.projects()) | set(ledger.projects())))
            self._forget_vanished()
            self.ledger = ledger
            self._save()
        log.info("usage ledger in %s, signing key %s, interval %ds", where, signer.key_id, cfg.interval)

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread:
            self.thread.join(10)
        with self.lock:
            if self.dirty_since is not None:
                self._save_quietly()
        self.exporter.shutdown()

    # ------------------------------------------------------------------ observations

    def project_of(self, namespace: str, ns_index: Mapping[str, Any] | None) -> str:
        if ns_index is not None and namespace in ns_index:
            for p in ns_index[namespace]:
                return p
        return namespace

    def on_event(self, kind: MeteredKind, type_: str | None, body: Mapping[str, Any],
                 ns_index: Mapping[str, Any] | None) -> None:
        meta = body.get("metadata") or {}
        entry = entry_from_body(kind, body, self.project_of(meta.get("namespace") or "", ns_index))
        now = datetime.now(UTC)
        with self.lock:
            if type_ == "DELETED":
                self.index.remove(entry.key)
                self._removed(entry, parse_kube_time(entry.deleting) or now)
                return
            old = self.index.put(entry)
            if old is not None and old.uid != entry.uid:
                self._removed(old, parse_kube_time(entry.created) or now)
                old = None
            self._account(entry, old, now)

    def _account(self, entry: Entry, old: Entry | None, now: datetime) -> None:
        """Feed the tracker what changed between ``old`` (as last seen) and ``entry``."""
        if entry.deleting:
            self._removed(entry, parse_kube_time(entry.deleting) or now)
            return
        if entry.same_usage(old) or not entry.project or self.ledger_off:
            return
        if old is not None and old.project != entry.project and old.project:
            self._removed(old, now)
            old = None
        if old is None or old.uid != entry.uid:
            at = parse_kube_time(entry.transition) or parse_kube_time(entry.created) or now
        elif old.running != entry.running:
            at = parse_kube_time(entry.transition) or now
        else:
            at = now
        at = min(at, now)
        if self.tracker.cursor(entry.project) is None:
            at = max(at, datetime.fromtimestamp(self.floor, UTC))
        try:
            changed = self.tracker.observe(entry.project, entry.uid, entry.kind, entry.meters, entry.running,
                                           at, name=f"{entry.namespace}/{entry.name}" if entry.namespace
                                           else entry.name)
        except ValueError as e:
            self.health.ledger_errors.labels("observe").inc()
            log.error("cannot meter %s %s/%s: %s", entry.kind, entry.namespace, entry.name, e)
            return
        if changed and self.dirty_since is None:
            self.dirty_since = time.monotonic()

    def resync(self) -> None:
        """Reconcile the tracker with a fresh listing of every metered kind, before closing.

        Watch events can be late: kopf pauses every handler for up to a minute after a
        crashed replica's peering record (same priority) until it expires, and a
        restarted operator replays the world only as its watches start. Closing on
        stale knowledge would bill a stopped server as running. So before intervals
        are closed (hourly by default: a few list calls, never one per scrape), each
        object is compared with the index; where they differ, the tracker gets the
        object's state at the object's own transition time, exactly as the pending
        event will (the tracker orders observations by time, so a listing older than a
        processed event cannot undo it). Tracked objects that neither the listing nor
        the index knows were deleted unseen and stop accruing now. The index itself is
        left to the event handlers.
        """
        listed: dict[str, list[dict]] = {}
        for plural, kind in self.kinds.items():
            try:
                listed[kind.kind] = kube.custom().list_cluster_custom_object(kind.group, kind.version, plural)["items"]
            except ApiException as e:
                if e.status == 404:
                    continue  # no such CRD
                raise
        namespaces = kube.core().list_namespace(label_selector=PROJECT_LABEL).items
        projects = {n.metadata.name: [n.metadata.labels[PROJECT_LABEL]] for n in namespaces}
        now = datetime.now(UTC)
        with self.lock:
            uids: dict[str, set[str]] = {}
            for kind_name, items in listed.items():
                kind = next(k for k in self.kinds.values() if k.kind == kind_name)
                seen = uids.setdefault(kind_name, set())
                for item in items:
                    meta = item.get("metadata") or {}
                    entry = entry_from_body(kind, item, self.project_of(meta.get("namespace") or "", projects))
                    seen.add(entry.uid)
                    self._account(entry, self.index.get(entry.key), now)
            indexed = self.index.uids()
            for project in self.tracker.projects():
                for uid, kind_name in self.tracker.resources(project).items():
                    if kind_name in uids and uid not in uids[kind_name] and uid not in indexed:
                        log.info("%s %s is gone without a deletion event; it stops accruing now", kind_name, uid)
                        self.tracker.remove(project, uid, now)
                        self.dirty_since = self.dirty_since or time.monotonic()

    def _removed(self, entry: Entry, at: datetime) -> None:
        if not entry.project or self.ledger_off:
            return
        with self.lock:
            if entry.uid not in self.tracker.resources(entry.project):
                return
            self.tracker.remove(entry.project, entry.uid, min(at, datetime.now(UTC)))
            # Not re-derivable from the cluster after a crash: save before returning.
            self._save_quietly()

    def _forget_vanished(self) -> None:
        """Stop accruing for tracked objects deleted while the operator was down."""
        now = datetime.now(UTC)
        live: dict[str, set[str]] = {}
        for plural, kind in self.kinds.items():
            try:
                items = kube.custom().list_cluster_custom_object(kind.group, kind.version, plural)["items"]
            except ApiException as e:
                if e.status == 404:
                    continue  # no such CRD: nothing of this kind can be judged vanished
                raise
            live[kind.kind] = {(i.get("metadata") or {}).get("uid") for i in items}
        for project in self.tracker.projects():
            for uid, kind_name in self.tracker.resources(project).items():
                if kind_name in live and uid not in live[kind_name]:
                    log.info("%s %s was deleted while the operator was down; it stops accruing now", kind_name, uid)
                    self.tracker.remove(project, uid, now)

    # ------------------------------------------------------------------ closing

    def _loop(self) -> None:
        tick = max(0.5, min(5.0, self.config.interval / 10))
        while not self.stop_event.wait(tick):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must survive; the error is logged and counted
                self.health.ledger_errors.labels("close").inc()
                log.exception("closing usage intervals failed; retrying in %.1fs", tick)

    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self.lock:
            if self.ledger is None:
                if not self.ledger_off and now >= self.next_open:
                    self.next_open = now + 60
                    try:
                        self.open_ledger()
                    except Exception as e:  # noqa: BLE001
                        self.health.ledger_errors.labels("startup").inc()
                        log.error("usage ledger still unavailable (retrying in 60s): %s", e)
                return
            cutoff = int(now) - self.config.grace
            if not self.tracker.due(cutoff):
                if self.dirty_since is not None and time.monotonic() - self.dirty_since >= SAVE_DELAY:
                    self._save_quietly()
                return
        # Network calls outside the lock, so event handlers are not held up by them.
        if self.resync_before_close:
            self.resync()
        self._refresh_keys()
        with self.lock:
            try:
                report = close_due(self.tracker, self.ledger, cutoff)
            finally:
                self._save_quietly()
            for conflict in report.adopted:
                log.warning("interval %s was already recorded with different usage; the stored record "
                            "stands", conflict.record_id)
            for rec in report.records:
                self.health.ledger_records.labels(rec.project).inc()
                self.health.ledger_head_seq.labels(rec.project).set(rec.seq)
                for meter, q in rec.usage.items():
                    self.health.usage.labels(rec.project, meter).inc(q)
            self.health.ledger_last_close.set(now)

    def _refresh_keys(self) -> None:
        if self.keys_version is None:
            return  # the signer was not loaded from the Secret (tests, dry runs)
        try:
            secret = kube.core().read_namespaced_secret(SIGNING_SECRET, self.config.namespace)
        except ApiException as e:
            log.warning("cannot re-read the signing key Secret (%s); signing with the loaded key", e.reason)
            return
        if secret.metadata.resource_version == self.keys_version:
            return
        signer, ring = keys_from_secret_data(secret.data or {})
        publish_keys(self.config.namespace, ring, signer.key_id)
        if self.ledger is not None and signer.key_id != self.ledger.signer.key_id:
            log.info("signing key rotated: new records are signed by %s", signer.key_id)
            self.ledger.signer = signer
        self.keys_version = secret.metadata.resource_version

    def _save(self) -> None:
        if self.state is None:
            return
        self.state.save(self.tracker.dumps())
        self.dirty_since = None

    def _save_quietly(self) -> None:
        try:
            self._save()
        except Exception as e:  # noqa: BLE001 - retried on the next tick
            self.health.ledger_errors.labels("save").inc()
            log.error("saving the metering state failed (retrying): %s", e)
            if self.dirty_since is None:
                self.dirty_since = time.monotonic()


_metering: Metering | None = None


def current() -> Metering | None:
    return _metering


# --------------------------------------------------------------------------- handler instrumentation


def instrument(registry: Any, health: Any) -> int:
    """Wrap every resource handler so it reports runs, errors and latency; returns how many.

    Uses kopf's registry internals; if they change, only these metrics are lost.
    """
    count = 0
    for sub in (getattr(registry, "_changing", None), getattr(registry, "_watching", None)):
        handlers = getattr(sub, "_handlers", None)
        if handlers is None:
            continue
        for i, h in enumerate(handlers):
            sel = h.selector
            resource = (getattr(sel, "plural", None) or getattr(sel, "any_name", None) or getattr(sel, "kind", None)
                        or str(sel))
            handlers[i] = dataclasses.replace(h, fn=_timed(h.fn, health, str(resource), str(h.id)))
            count += 1
    return count


def _timed(fn, health, resource: str, handler: str):
    if getattr(fn, "_stratus_timed", False):
        return fn

    def outcome(exc: BaseException | None) -> str:
        if exc is None:
            return "success"
        return "retry" if isinstance(exc, kopf.TemporaryError) else "error"

    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            health.in_flight.labels(resource).inc()
            exc = None
            try:
                return await fn(*args, **kwargs)
            except BaseException as e:
                exc = e
                raise
            finally:
                health.in_flight.labels(resource).dec()
                health.observe_handler(resource, handler, outcome(exc), time.perf_counter() - t0)
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            health.in_flight.labels(resource).inc()
            exc = None
            try:
                return fn(*args, **kwargs)
            except BaseException as e:
                exc = e
                raise
            finally:
                health.in_flight.labels(resource).dec()
                health.observe_handler(resource, handler, outcome(exc), time.perf_counter() - t0)
    wrapper._stratus_timed = True
    return wrapper


# --------------------------------------------------------------------------- kopf handlers


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


def _selected(env: Mapping[str, str] = os.environ) -> Iterable[MeteredKind]:
    wanted = {k.strip() for k in (env.get("STRATUS_METER_KINDS") or "").split(",") if k.strip()}
    return [k for k in KINDS if not wanted or k.plural in wanted]


for _kind in _selected():
    _register(_kind)

