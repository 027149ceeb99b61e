"""The Prometheus exporter: `/metrics` from an in-memory index of metered objects.

Design decisions
================

The index, not the API server, answers a scrape.
    :class:`MeterIndex` holds one immutable :class:`Entry` per metered object, keyed by
    (kind, namespace, name). kopf event handlers (``stratus.controllers.metering``)
    keep it current from the watch streams the operator already runs, so a scrape
    costs a copy of a list under a lock and no API call, whatever the scrape rate.
    The same entries feed the usage tracker, so what Prometheus shows and what the
    ledger bills come from one reading of each object.

A table of kinds (:data:`KINDS`).
    Each :class:`MeteredKind` says where a kind lives (group, version, plural, scope),
    which numbers it exports (``values``, in base units), which labels describe it
    (``info``), which usage meters it accrues (``meters``, names from
    :data:`stratus.core.metering.DEFAULT_METERS`) and when it counts as running. Kinds
    other than Server are built in parallel by other issues; their entries read the
    field names those kinds are expected to have and tolerate any of them being
    absent (a missing field reads as 0 or ""). A kind whose CRD does not exist is
    simply never seen: kopf warns that it cannot watch it and picks it up when the CRD
    appears. Adding a kind is one table entry.

Which objects belong to which project.
    A namespaced object belongs to the Project whose namespace holds it (the Project
    controller labels its namespace ``stratus.dev/project=<name>``); in a namespace no
    Project owns, the namespace name stands for the project, so nothing goes unmetered.
    A cluster-scoped kind names its project in a field (a bare-metal node allocated to
    a project); unallocated, it is exported with ``project=""`` and accrues nothing.

Names follow Prometheus conventions.
    Everything is prefixed ``stratus_``; base units only (``_bytes``, ``_seconds``);
    counters end in ``_total``; per-object series carry ``project``, ``namespace`` and
    ``name``; descriptive strings (flavor, state, volume type) go on one ``_info``
    series per object whose value is 1, so a state change replaces one series instead
    of changing the labels of every numeric series. Per-project aggregates
    (``stratus_project_objects``, ``stratus_project_usage_rate``) spare dashboards a
    ``sum by`` over thousands of series.

Operator health.
    :class:`Health` counts handler runs by resource, handler and outcome, observes
    their latency in a histogram and tracks how many run at once (the closest thing
    to a queue kopf exposes: each object's events wait behind its running handler).
    The ledger writer reports records written, errors and the chain head of each
    project (the published head that ``stratus meter verify --heads`` checks against,
    which is what catches a deleted tail).

The server.
    prometheus-client's own HTTP server on a thread, bound to the address and port of
    the operator's ``--metrics-bind``/``--metrics-port`` (0 disables it). The registry
    is a fresh one per exporter (not the process-global default) with the process
    collector added, so tests and benchmarks can build as many as they like.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..api.registry import GROUP, LABEL_PREFIX, VERSION
from ..core.quantity import parse_bytes

log = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "Entry",
    "Exporter",
    "Health",
    "MeterIndex",
    "MeteredKind",
    "Value",
    "entry_from_body",
    "kind_by_plural",
]

PROJECT_LABEL = f"{LABEL_PREFIX}/project"
OBJECT_LABELS = ("project", "namespace", "name")


# --------------------------------------------------------------------------- field readers


def _get(body: Mapping[str, Any], path: str) -> Any:
    cur: Any = body
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def _first(body: Mapping[str, Any], *paths: str) -> Any:
    for p in paths:
        v = _get(body, p)
        if v not in (None, ""):
            return v
    return None


def _bytes(body: Mapping[str, Any], *paths: str) -> int:
    """The first of ``paths`` that holds a byte quantity, in bytes; 0 when none does."""
    v = _first(body, *paths)
    if isinstance(v, bool) or v is None:
        return 0
    try:
        return max(0, parse_bytes(v))
    except (ValueError, TypeError):
        return 0


def _int(body: Mapping[str, Any], *paths: str) -> int:
    v = _first(body, *paths)
    if isinstance(v, bool):
        return int(v)
    try:
        return max(0, int(v)) if v is not None else 0
    except (ValueError, TypeError):
        return 0


def _str(body: Mapping[str, Any], *paths: str) -> str:
    v = _first(body, *paths)
    return "" if v is None else str(v)


def _phase(body: Mapping[str, Any]) -> str:
    return _str(body, "status.phase")


def _ready(body: Mapping[str, Any]) -> bool:
    """The Ready condition is True: for a Server, it runs (ACTIVE, or MIGRATING while it moves)."""
    for c in _get(body, "status.conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def _ready_transition(body: Mapping[str, Any]) -> str | None:
    """When the Ready condition last flipped: for a Server, when it entered or left ACTIVE."""
    for c in _get(body, "status.conditions") or []:
        if isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("lastTransitionTime"):
            return str(c["lastTransitionTime"])
    return None


def _qualified(meter: str, qualifier: str) -> str:
    """``volume-byte-seconds/ssd`` when the qualifier is usable as one, else the meter."""
    q = "".join(ch for ch in qualifier if ch.isalnum() or ch in "._-")
    return f"{meter}/{q}" if q else meter


# --------------------------------------------------------------------------- the kind table


@dataclass(frozen=True)
class Value:
    """A number exported per object as ``stratus_<kind>_<name>`` (base units)."""

    name: str
    help: str
    read: Callable[[Mapping[str, Any]], int]


@dataclass(frozen=True)
class MeteredKind:
    kind: str
    plural: str
    metric: str  # the metric name stem: stratus_<metric>_...
    values: tuple[Value, ...] = ()
    info: Callable[[Mapping[str, Any]], dict[str, str]] = lambda b: {"state": _phase(b)}
    meters: Callable[[Mapping[str, Any]], dict[str, int]] = lambda b: {}
    running: Callable[[Mapping[str, Any]], bool] = lambda b: True
    #: When the running flag last changed, as the object itself records it.
    transition: Callable[[Mapping[str, Any]], str | None] = lambda b: None
    #: For cluster-scoped kinds: the project the object is allocated to.
    project: Callable[[Mapping[str, Any]], str] | None = None
    group: str = GROUP
    version: str = VERSION

    @property
    def namespaced(self) -> bool:
        return self.project is None

    @property
    def info_labels(self) -> tuple[str, ...]:
        return tuple(sorted(self.info({})))


def _server_meters(b: Mapping[str, Any]) -> dict[str, int]:
    return {"vcpu-seconds": _int(b, "status.vcpus"), "memory-byte-seconds": _bytes(b, "status.memory")}


def _volume_meters(b: Mapping[str, Any]) -> dict[str, int]:
    return {_qualified("volume-byte-seconds", _str(b, "status.volumeType", "spec.volumeType")):
            _bytes(b, "status.size", "spec.size")}


def _ready_instances(b: Mapping[str, Any]) -> int:
    return sum(1 for i in _get(b, "status.instances") or [] if i.get("ready"))


def _database_meters(b: Mapping[str, Any]) -> dict[str, int]:
    """Ready instances by flavor while they run; every instance's storage while it exists.
    Backups are not metered here: they are objects in the project's Bucket, whose bytes
    bucket-byte-seconds already counts."""
    instances = _int(b, "spec.instances") or 1
    return {_qualified("database-instance-seconds", _str(b, "spec.flavor")): _ready_instances(b),
            "database-storage-byte-seconds": instances * _bytes(b, "spec.storage.size")}


def _data_cluster_meters(b: Mapping[str, Any]) -> dict[str, int]:
    """Ready nodes per flavor (node groups may use different flavors)."""
    ready = {g.get("name"): int(g.get("ready") or 0) for g in _get(b, "status.nodeGroups") or []}
    out: dict[str, int] = {}
    for group in _get(b, "spec.nodeGroups") or []:
        meter = _qualified("data-node-seconds", str(group.get("flavor") or ""))
        out[meter] = out.get(meter, 0) + ready.get(group.get("name"), 0)
    return out


KINDS: tuple[MeteredKind, ...] = (
    MeteredKind(
        kind="Server", plural="servers", metric="server",
        values=(
            Value("vcpus", "Virtual CPUs of the server's flavor.", lambda b: _int(b, "status.vcpus")),
            Value("memory_bytes", "Memory of the server's flavor in bytes.", lambda b: _bytes(b, "status.memory")),
            Value("running", "1 while the server runs (ACTIVE, or MIGRATING while it moves), else 0.",
                  lambda b: int(_ready(b))),
        ),
        info=lambda b: {"flavor": _str(b, "spec.flavor"), "state": _phase(b), "node": _str(b, "status.node")},
        meters=_server_meters,
        running=_ready,
        transition=_ready_transition,
    ),
    MeteredKind(
        kind="Volume", plural="volumes", metric="volume",
        values=(Value("size_bytes", "Provisioned size of the volume in bytes.",
                      lambda b: _bytes(b, "status.size", "spec.size")),),
        info=lambda b: {"type": _str(b, "status.volumeType", "spec.volumeType"), "state": _phase(b)},
        meters=_volume_meters,
    ),
    MeteredKind(
        kind="Image", plural="images", metric="image",
        values=(Value("size_bytes", "Stored size of the image in bytes.",
                      lambda b: _bytes(b, "status.size")),),
        info=lambda b: {"disk_format": _str(b, "spec.diskFormat"), "visibility": _str(b, "spec.visibility"),
                        "state": _phase(b)},
        meters=lambda b: {"image-byte-seconds": _bytes(b, "status.size")},
    ),
    MeteredKind(
        kind="Bucket", plural="buckets", metric="bucket",
        values=(
            Value("objects", "Objects stored in the bucket.", lambda b: _int(b, "status.usage.objects")),
            Value("size_bytes", "Bytes stored in the bucket.",
                  lambda b: _bytes(b, "status.usage.bytes")),
        ),
        meters=lambda b: {"bucket-byte-seconds": _bytes(b, "status.usage.bytes")},
    ),
    MeteredKind(
        kind="Database", plural="databases", metric="database",
        values=(
            Value("instances", "Instances the database should have.", lambda b: _int(b, "spec.instances") or 1),
            Value("ready_instances", "Instances whose engine accepts connections.", _ready_instances),
            Value("volume_size_bytes", "Storage of each instance in bytes.", lambda b: _bytes(b, "spec.storage.size")),
            Value("max_replication_lag_bytes", "The largest replication lag of its replicas in bytes.",
                  lambda b: max([int(i.get("lagBytes") or 0) for i in _get(b, "status.instances") or []] or [0])),
        ),
        info=lambda b: {"engine": _str(b, "spec.engine"), "version": _str(b, "status.engineVersion", "spec.version"),
                        "flavor": _str(b, "spec.flavor"), "state": _phase(b)},
        meters=_database_meters,
        running=lambda b: _ready_instances(b) > 0,
    ),
    MeteredKind(
        kind="DataCluster", plural="dataclusters", metric="data_cluster",
        values=(Value("nodes", "Nodes up: the master answering plus registered workers.",
                      lambda b: _int(b, "status.nodes")),
                Value("cores", "Cores the registered workers offer.", lambda b: _int(b, "status.cores"))),
        info=lambda b: {"framework": _str(b, "spec.framework"), "version": _str(b, "spec.version"), "state": _phase(b)},
        meters=_data_cluster_meters,
        running=lambda b: _int(b, "status.nodes") > 0,
    ),
    MeteredKind(
        kind="DataJob", plural="datajobs", metric="data_job",
        values=(Value("running", "1 while the job runs, else 0.", lambda b: int(_phase(b) == "RUNNING")),),
        info=lambda b: {"cluster": _str(b, "spec.clusterName"), "state": _phase(b)},
        meters=lambda b: {"data-job-seconds": 1},
        running=lambda b: _phase(b) == "RUNNING",
    ),
    MeteredKind(
        kind="BareMetalNode", plural="baremetalnodes", metric="baremetal_node",
        values=(
            Value("powered_on", "1 while the node's power is on, else 0.",
                  lambda b: int(_str(b, "status.powerState").lower() in ("on", "power on", "poweron"))),
            Value("provisioned", "1 while the node is provisioned (deployed), else 0.",
                  lambda b: int(_str(b, "status.provisionState", "status.phase").lower()
                                in ("active", "provisioned", "deployed"))),
        ),
        info=lambda b: {"power_state": _str(b, "status.powerState"),
                        "provision_state": _str(b, "status.provisionState", "status.phase")},
        meters=lambda b: {"baremetal-node-seconds": int(bool(_str(b, "spec.project", "status.project")))},
        project=lambda b: _str(b, "spec.project", "status.project"),
    ),
)


def kind_by_plural(plural: str) -> MeteredKind:
    for k in KINDS:
        if k.plural == plural:
            return k
    raise KeyError(plural)


# --------------------------------------------------------------------------- the index


@dataclass(frozen=True)
class Entry:
    """What the exporter and the tracker know about one object."""

    kind: str
    namespace: str
    name: str
    uid: str
    project: str
    values: dict[str, int]
    info: dict[str, str]
    meters: dict[str, int]
    running: bool
    transition: str | None = None
    created: str | None = None
    deleting: str | None = None  # the deletionTimestamp, once set

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    def same_usage(self, other: Entry | None) -> bool:
        return other is not None and other.uid == self.uid and other.project == self.project and (
            other.running, other.meters) == (self.running, self.meters)


def entry_from_body(kind: MeteredKind, body: Mapping[str, Any], project: str) -> Entry:
    """The index entry for ``body``; ``project`` is the namespace's project (namespaced kinds)."""
    meta = body.get("metadata") or {}
    if kind.project is not None:
        project = kind.project(body)
    return Entry(
        kind=kind.kind,
        namespace=meta.get("namespace") or "",
        name=meta.get("name") or "",
        uid=meta.get("uid") or "",
        project=project,
        values={v.name: v.read(body) for v in kind.values},
        info=kind.info(body),
        meters={m: q for m, q in kind.meters(body).items() if q},
        running=bool(kind.running(body)),
        transition=kind.transition(body),
        created=meta.get("creationTimestamp"),
        deleting=meta.get("deletionTimestamp"),
    )


class MeterIndex:
    """Entries by (kind, namespace, name); safe to read from the scrape thread."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, str], Entry] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str]) -> Entry | None:
        return self._entries.get(key)

    def put(self, entry: Entry) -> Entry | None:
        """Store ``entry``; return the one it replaces."""
        with self._lock:
            old = self._entries.get(entry.key)
            self._entries[entry.key] = entry
            return old

    def remove(self, key: tuple[str, str, str]) -> Entry | None:
        with self._lock:
            return self._entries.pop(key, None)

    def snapshot(self) -> list[Entry]:
        with self._lock:
            return list(self._entries.values())

    def uids(self, kind: str | None = None) -> set[str]:
        return {e.uid for e in self.snapshot() if kind is None or e.kind == kind}

    def __len__(self) -> int:
        return len(self._entries)


# --------------------------------------------------------------------------- health


class Health:
    """The operator's own metrics, registered in the exporter's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.handler_runs = Counter(
            "stratus_handler_runs", "Handler invocations by resource, handler and outcome "
            "(success, retry, error).", ["resource", "handler", "outcome"], registry=registry)
        self.handler_errors = Counter(
            "stratus_handler_errors", "Handler invocations that raised (retried or failed).",
            ["resource", "handler"], registry=registry)
        self.handler_duration = Histogram(
            "stratus_handler_duration_seconds", "Handler latency in seconds.", ["resource", "handler"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=registry)
        self.in_flight = Gauge(
            "stratus_handlers_in_flight", "Handlers running now; events for those objects wait behind them.",
            ["resource"], registry=registry)
        self.ledger_records = Counter(
            "stratus_ledger_records", "Usage records appended to the ledger by this process.", ["project"],
            registry=registry)
        self.ledger_errors = Counter(
            "stratus_ledger_errors", "Failed attempts to close intervals or save the metering state.",
            ["stage"], registry=registry)
        self.ledger_head_seq = Gauge(
            "stratus_ledger_head_seq", "Sequence number of the newest record of each project's chain.",
            ["project"], registry=registry)
        self.ledger_last_close = Gauge(
            "stratus_ledger_last_close_timestamp_seconds", "When the operator last closed intervals "
            "(Unix time).", registry=registry)
        self.usage = Counter(
            "stratus_metered_usage", "Resource-seconds recorded in the ledger by this process, per project "
            "and meter (vcpu-seconds, memory-byte-seconds, ...).", ["project", "meter"], registry=registry)

    def observe_handler(self, resource: str, handler: str, outcome: str, seconds: float) -> None:
        self.handler_runs.labels(resource, handler, outcome).inc()
        if outcome != "success":
            self.handler_errors.labels(resource, handler).inc()
        self.handler_duration.labels(resource, handler).observe(seconds)


# --------------------------------------------------------------------------- the collector


class IndexCollector(Collector):
    """Reads the index on each scrape; builds families per kind and per project."""

    def __init__(self, index: MeterIndex, kinds: Iterable[MeteredKind] = KINDS) -> None:
        self.index = index
        self.kinds = tuple(kinds)

    def describe(self) -> list:
        return []  # unchecked collector: families depend on the index

    def collect(self):
        entries = self.index.snapshot()
        by_kind: dict[str, list[Entry]] = {}
        for e in entries:
            by_kind.setdefault(e.kind, []).append(e)
        objects = GaugeMetricFamily("stratus_project_objects", "Metered objects per project, kind and state.",
                                    labels=["project", "kind", "state"])
        rate = GaugeMetricFamily(
            "stratus_project_usage_rate", "Quantity accruing per second per project and meter now "
            "(vCPUs, bytes, nodes): the slope of the usage the ledger will record.", labels=["project", "meter"])
        counts: dict[tuple[str, str, str], int] = {}
        rates: dict[tuple[str, str], int] = {}
        for kind in self.kinds:
            items = by_kind.get(kind.kind, [])
            prefix = f"stratus_{kind.metric}"
            families = {
                v.name: GaugeMetricFamily(f"{prefix}_{v.name}", v.help, labels=list(OBJECT_LABELS))
                for v in kind.values
            }
            info_labels = kind.info_labels
            info = GaugeMetricFamily(f"{prefix}_info", f"One series per {kind.kind} with its descriptive labels.",
                                     labels=[*OBJECT_LABELS, *info_labels])
            for e in items:
                obj = [e.project, e.namespace, e.name]
                for v in kind.values:
                    families[v.name].add_metric(obj, e.values.get(v.name, 0))
                info.add_metric(obj + [e.info.get(k, "") for k in info_labels], 1)
                ck = (e.project, e.kind, e.info.get("state", ""))
                counts[ck] = counts.get(ck, 0) + 1
                if e.project and not e.deleting:
                    for meter, q in e.meters.items():
                        base = meter.split("/", 1)[0]
                        if e.running or base not in _WHILE_RUNNING:
                            rates[(e.project, meter)] = rates.get((e.project, meter), 0) + q
            yield from families.values()
            yield info
        for (p, k, s), n in sorted(counts.items()):
            objects.add_metric([p, k, s], n)
        for (p, m), q in sorted(rates.items()):
            rate.add_metric([p, m], q)
        yield objects
        yield rate
        yield GaugeMetricFamily("stratus_index_objects", "Objects in the exporter's in-memory index.",
                                value=len(entries))


def _while_running() -> frozenset[str]:
    from ..core.metering import DEFAULT_METERS

    return frozenset(m.name for m in DEFAULT_METERS if m.while_running)


_WHILE_RUNNING = _while_running()


def metrics_auth(app):
    """WSGI middleware: authenticate and authorise before the wrapped app runs."""
    from kubernetes.client.rest import ApiException

    from ..drivers import access

    def reply(start_response, status: str, text: str, headers=()):
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *headers])
        return [text.encode()]

    def wrapped(environ, start_response):
        token = access.bearer_token(environ.get("HTTP_AUTHORIZATION"))
        if token is None:
            return reply(start_response, "401 Unauthorized", "a bearer token is required\n",
                         [("WWW-Authenticate", 'Bearer realm="stratus-metrics"')])
        try:
            caller = access.authenticate(token)
            ok = caller is not None and access.allowed(caller, "get", path="/metrics")
        except (ApiException, OSError) as exc:
            log.warning("metrics: cannot review a caller: %s", getattr(exc, "reason", exc))
            return reply(start_response, "503 Service Unavailable", "cannot reach the API server to authenticate\n")
        if caller is None:
            return reply(start_response, "401 Unauthorized", "the token was not accepted\n",
                         [("WWW-Authenticate", 'Bearer realm="stratus-metrics"')])
        if not ok:
            return reply(start_response, "403 Forbidden", "not allowed to get /metrics (RBAC: nonResourceURLs /metrics, verb get)\n")
        if environ.get("PATH_INFO", "/") not in ("/metrics", "/metrics/"):
            return reply(start_response, "404 Not Found", "only /metrics is served here\n")
        return app(environ, start_response)

    return wrapped


@dataclass
class Exporter:
    """The registry with the index collector, the process collector and :class:`Health`."""

    index: MeterIndex = field(default_factory=MeterIndex)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.registry.register(IndexCollector(self.index))
        ProcessCollector(registry=self.registry)
        self.health = Health(self.registry)
        self._server = None

    def scrape(self) -> bytes:
        """The exposition text, as a GET /metrics would return it."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1", auth: str | None = None) -> int:
        """Serve /metrics on a thread; returns the bound port. ``auth`` (default
        ``$STRATUS_METRICS_AUTH`` or ``kubernetes``) is ``kubernetes``: a bearer token that
        the API server authenticates (TokenReview) and authorises for ``get`` on the
        non-resource URL ``/metrics`` (SubjectAccessReview), before anything is read; or
        ``none``, allowed only on a loopback address (behind an authenticating proxy)."""
        import ipaddress
        import os
        from socketserver import ThreadingMixIn
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        from prometheus_client import make_wsgi_app

        auth = auth or os.environ.get("STRATUS_METRICS_AUTH") or "kubernetes"
        if auth not in ("kubernetes", "none"):
            raise ValueError(f"STRATUS_METRICS_AUTH: {auth!r} is neither 'kubernetes' nor 'none'")
        if auth == "none" and not ipaddress.ip_address(addr).is_loopback:
            raise ValueError(f"STRATUS_METRICS_AUTH=none needs a loopback bind address, not {addr}: "
                             "unauthenticated metrics would list every tenant's objects")
        app = make_wsgi_app(self.registry)
        if auth == "kubernetes":
            app = metrics_auth(app)

        class Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args) -> None:  # no access log (it would carry nothing useful)
                pass

        server = make_server(addr, port, app, Server, handler_class=Quiet)
        thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
        thread.start()
        self._server = (server, thread)
        return server.server_port

    def shutdown(self) -> None:
        if self._server:
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(5)
            self._server = None

