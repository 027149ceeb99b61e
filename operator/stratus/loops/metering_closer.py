"""The metering runtime: the usage tracker fed from watch events, and the interval
closer, a thread that closes every due interval into the signed ledger.

Design decisions are in ``controllers/metering.py`` (events, transition times, closing,
restarts, where things live, keys). This module holds what runs: :class:`Metering` (one
per process) keeps the exporter's index and the tracker current (``on_event``),
reconciles the tracker with fresh listings before closing (``resync``), and its thread
(``tick`` every few seconds) opens the ledger when it can, saves the tracker state, and
closes due intervals. What a tick does and when a change took effect are decided in
``core.metering`` (``tick_step``, ``observation_time``, ``vanished``); the signing keys
are read and published by ``drivers.ledger_keys``, the state saved by
``drivers.metering``, records appended by ``drivers.ledger_store``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.rest import ApiException

from ..core.ledger import Ledger, close_due
from ..core.metering import DEFAULT_INTERVAL, TickStep, UsageTracker, observation_time, parse_kube_time, tick_step, vanished
from ..drivers import ledger_keys, metering as store
from ..drivers.metering import STATE_FILE, ConfigMapState, FileState
from ..services.metrics import KINDS, PROJECT_LABEL, Entry, Exporter, MeteredKind, entry_from_body

log = logging.getLogger("stratus.metering")

DEFAULT_LEDGER_DIR = "/var/lib/stratus/ledger"
SAVE_DELAY = 1.0  # seconds: the most a crash can lose of changes not re-derivable from objects
OPEN_RETRY = 60.0  # seconds between attempts to open a ledger that could not be opened


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
        kinds = selected_kinds(env)
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


def selected_kinds(env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The plurals STRATUS_METER_KINDS names (empty: every metered kind)."""
    return tuple(k.strip() for k in (env.get("STRATUS_METER_KINDS") or "").split(",") if k.strip())


def operator_namespace(env: Mapping[str, str] = os.environ) -> str:
    """STRATUS_NAMESPACE, else the pod's own namespace, else ``default``."""
    if env.get("STRATUS_NAMESPACE"):
        return env["STRATUS_NAMESPACE"]
    try:
        return pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
    except OSError:
        return "default"


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
        self.next_open = time.time() + OPEN_RETRY
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
        signer, ring, version = ledger_keys.load_keys(cfg.namespace)
        ledger_keys.publish_keys(cfg.namespace, ring, signer.key_id)
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
        new = old is None or old.uid != entry.uid
        at = observation_time(new=new, running_changed=not new and old.running != entry.running,
                              transition=parse_kube_time(entry.transition), created=parse_kube_time(entry.created),
                              now=now, floor=datetime.fromtimestamp(self.floor, UTC)
                              if self.tracker.cursor(entry.project) is None else None)
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
            items = store.list_kind(kind.group, kind.version, plural)
            if items is not None:  # None: no such CRD
                listed[kind.kind] = items
        projects = store.project_namespaces(PROJECT_LABEL)
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
            tracked = {p: self.tracker.resources(p) for p in self.tracker.projects()}
            for project, uid, kind_name in vanished(tracked, uids, self.index.uids()):
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
            items = store.list_kind(kind.group, kind.version, plural)
            if items is not None:  # None: no such CRD, so nothing of this kind can be judged vanished
                live[kind.kind] = {(i.get("metadata") or {}).get("uid") for i in items}
        tracked = {p: self.tracker.resources(p) for p in self.tracker.projects()}
        for project, uid, kind_name in vanished(tracked, live):
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
            cutoff = int(now) - self.config.grace
            step = tick_step(ledger_open=self.ledger is not None, ledger_off=self.ledger_off, now=now,
                             next_open=self.next_open, due=self.ledger is not None and bool(self.tracker.due(cutoff)),
                             dirty_since=self.dirty_since, monotonic=time.monotonic(), save_delay=SAVE_DELAY)
            if step == TickStep.OPEN:
                self.next_open = now + OPEN_RETRY
                try:
                    self.open_ledger()
                except Exception as e:  # noqa: BLE001 - retried; the cause is logged and counted
                    self.health.ledger_errors.labels("startup").inc()
                    log.error("usage ledger still unavailable (retrying in %.0fs): %s", OPEN_RETRY, e)
            elif step == TickStep.SAVE:
                self._save_quietly()
            if step != TickStep.CLOSE:
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
            changed = ledger_keys.read_keys_if_changed(self.config.namespace, self.keys_version)
        except ApiException as e:
            log.warning("cannot re-read the signing key Secret (%s); signing with the loaded key", e.reason)
            return
        if changed is None:
            return
        signer, ring, version = changed
        ledger_keys.publish_keys(self.config.namespace, ring, signer.key_id)
        if self.ledger is not None and signer.key_id != self.ledger.signer.key_id:
            log.info("signing key rotated: new records are signed by %s", signer.key_id)
            self.ledger.signer = signer
        self.keys_version = version

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


