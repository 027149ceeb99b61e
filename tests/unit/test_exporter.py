"""The exporter and the metering runtime without a cluster: kind table, index, collector
text, event -> tracker observations, interval closing into a signed ledger, restarts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stratus.controllers.instrumentation import instrument
from stratus.drivers.ledger_keys import keys_from_secret_data
from stratus.drivers.metering import FileState
from stratus.loops.metering_closer import Config, Metering
from stratus.core.ledger import Keyring, Ledger, Signer, verify
from stratus.core.metering import to_epoch
from stratus.drivers.ledger_store import MemoryLedgerStore
from stratus.services.metrics import KINDS, Exporter, MeterIndex, entry_from_body, kind_by_plural

GiB = 1 << 30


def server(name="s1", ns="ns1", uid="u1", phase="ACTIVE", vcpus=2, memory="4Gi", flavor="m1", ready_at="2026-01-01T00:00:10Z",
           created="2026-01-01T00:00:00Z", deleting=None):
    meta = {"name": name, "namespace": ns, "uid": uid, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = deleting
    return {
        "apiVersion": "stratus.dev/v1alpha1", "kind": "Server", "metadata": meta,
        "spec": {"flavor": flavor, "containerDisk": "x/y:1"},
        "status": {"phase": phase, "vcpus": vcpus, "memory": memory, "node": "n1",
                   "conditions": [{"type": "Ready", "status": "True" if phase == "ACTIVE" else "False",
                                   "lastTransitionTime": ready_at}]},
    }


def samples(text: bytes) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# --------------------------------------------------------------------------- the kind table

@pytest.mark.parametrize(
    "plural, body, values, meters, running, project",
    [
        ("servers", server(), {"vcpus": 2, "memory_bytes": 4 * GiB, "running": 1},
         {"vcpu-seconds": 2, "memory-byte-seconds": 4 * GiB}, True, "p"),
        ("servers", server(phase="SHUTOFF"), {"vcpus": 2, "memory_bytes": 4 * GiB, "running": 0},
         {"vcpu-seconds": 2, "memory-byte-seconds": 4 * GiB}, False, "p"),
        ("servers", {"metadata": {"name": "b", "namespace": "n", "uid": "u"}, "spec": {}, "status": {"phase": "BUILD"}},
         {"vcpus": 0, "memory_bytes": 0, "running": 0}, {}, False, "p"),
        ("volumes", {"metadata": {"name": "v", "namespace": "n", "uid": "u"}, "spec": {"size": "10Gi", "volumeType": "ssd"},
                     "status": {"phase": "Available", "size": "12Gi", "volumeType": "ssd"}},
         {"size_bytes": 12 * GiB}, {"volume-byte-seconds/ssd": 12 * GiB}, True, "p"),
        ("volumes", {"metadata": {"name": "v", "namespace": "n", "uid": "u"}, "spec": {"size": "1Gi"}},
         {"size_bytes": GiB}, {"volume-byte-seconds": GiB}, True, "p"),
        ("images", {"metadata": {"name": "i", "namespace": "n", "uid": "u"}, "spec": {"diskFormat": "qcow2"},
                    "status": {"size": 1234}}, {"size_bytes": 1234}, {"image-byte-seconds": 1234}, True, "p"),
        ("buckets", {"metadata": {"name": "b", "namespace": "n", "uid": "u"},
                     "status": {"usage": {"objects": 3, "bytes": 300}}},
         {"objects": 3, "size_bytes": 300}, {"bucket-byte-seconds": 300}, True, "p"),
        ("buckets", {"metadata": {"name": "b", "namespace": "n", "uid": "u"}, "status": {}},
         {"objects": 0, "size_bytes": 0}, {}, True, "p"),
        ("baremetalnodes", {"metadata": {"name": "bm", "uid": "u"}, "spec": {"project": "acme"},
                            "status": {"powerState": "On", "provisionState": "Active"}},
         {"powered_on": 1, "provisioned": 1}, {"baremetal-node-seconds": 1}, True, "acme"),
        ("baremetalnodes", {"metadata": {"name": "bm", "uid": "u"}, "spec": {}, "status": {"powerState": "Off"}},
         {"powered_on": 0, "provisioned": 0}, {}, True, ""),
        ("databases", {"metadata": {"name": "d", "namespace": "n", "uid": "u"},
                       "spec": {"engine": "postgresql", "instances": 3, "flavor": "db.small", "storage": {"size": "5Gi"}},
                       "status": {"phase": "ACTIVE", "instances": [{"name": "d-0", "ready": True},
                                                                   {"name": "d-1", "ready": True, "lagBytes": 4096},
                                                                   {"name": "d-2", "ready": False}]}},
         {"instances": 3, "ready_instances": 2, "volume_size_bytes": 5 * GiB, "max_replication_lag_bytes": 4096},
         {"database-instance-seconds/db.small": 2, "database-storage-byte-seconds": 15 * GiB}, True, "p"),
        ("databases", {"metadata": {"name": "d", "namespace": "n", "uid": "u"},
                       "spec": {"engine": "mariadb", "storage": {"size": "1Gi"}}, "status": {"phase": "BUILD"}},
         {"instances": 1, "ready_instances": 0, "volume_size_bytes": GiB, "max_replication_lag_bytes": 0},
         {"database-storage-byte-seconds": GiB}, False, "p"),
        ("dataclusters", {"metadata": {"name": "d", "namespace": "n", "uid": "u"},
                          "spec": {"nodeGroups": [{"name": "master", "flavor": "m1"}, {"name": "w", "flavor": "big"},
                                                  {"name": "w2", "flavor": "big"}]},
                          "status": {"nodes": 4, "cores": 6, "nodeGroups": [{"name": "master", "ready": 1},
                                                                            {"name": "w", "ready": 2},
                                                                            {"name": "w2", "ready": 1}]}},
         {"nodes": 4, "cores": 6}, {"data-node-seconds/m1": 1, "data-node-seconds/big": 3}, True, "p"),
        ("datajobs", {"metadata": {"name": "j", "namespace": "n", "uid": "u"}, "status": {"phase": "RUNNING"}},
         {"running": 1}, {"data-job-seconds": 1}, True, "p"),
        ("datajobs", {"metadata": {"name": "j", "namespace": "n", "uid": "u"}, "status": {"phase": "SUCCEEDED"}},
         {"running": 0}, {"data-job-seconds": 1}, False, "p"),
    ],
    ids=["server-active", "server-shutoff", "server-build-no-size", "volume-status-size-typed", "volume-spec-size",
         "image", "bucket", "bucket-unmeasured", "baremetal-allocated", "baremetal-free", "database-replicas",
         "database-building", "datacluster", "datajob-running", "datajob-ended"],
)
def test_entry_from_body(plural, body, values, meters, running, project):
    e = entry_from_body(kind_by_plural(plural), body, "p")
    assert (e.values, e.meters, e.running, e.project) == (values, meters, running, project)


def test_every_kind_has_a_unique_metric_stem_and_valid_meters():
    from stratus.core.metering import DEFAULT_METERS

    stems = [k.metric for k in KINDS]
    assert len(stems) == len(set(stems))
    known = {m.name for m in DEFAULT_METERS}
    for k in KINDS:
        for meter in k.meters({}):
            assert meter.split("/")[0] in known


# --------------------------------------------------------------------------- the collector

def test_scrape_reports_each_object_and_project_aggregates():
    ex = Exporter()
    ex.index.put(entry_from_body(kind_by_plural("servers"), server("a", uid="ua"), "p1"))
    ex.index.put(entry_from_body(kind_by_plural("servers"), server("b", uid="ub", phase="SHUTOFF", vcpus=4), "p1"))
    ex.index.put(entry_from_body(kind_by_plural("buckets"), {"metadata": {"name": "bk", "namespace": "ns1", "uid": "uk"},
                                                              "status": {"usage": {"objects": 2, "bytes": 99}}}, "p2"))
    s = samples(ex.scrape())
    obj = lambda name: (("name", name), ("namespace", "ns1"), ("project", "p1"))  # noqa: E731
    assert s[("stratus_server_vcpus", obj("a"))] == 2
    assert s[("stratus_server_vcpus", obj("b"))] == 4
    assert s[("stratus_server_memory_bytes", obj("a"))] == 4 * GiB
    assert s[("stratus_server_running", obj("b"))] == 0
    assert s[("stratus_server_info", tuple(sorted(obj("a") + (("flavor", "m1"), ("node", "n1"), ("state", "ACTIVE")))))] == 1
    assert s[("stratus_bucket_size_bytes", (("name", "bk"), ("namespace", "ns1"), ("project", "p2")))] == 99
    # only the running server's vCPUs accrue; the bucket's bytes accrue regardless
    assert s[("stratus_project_usage_rate", (("meter", "vcpu-seconds"), ("project", "p1")))] == 2
    assert s[("stratus_project_usage_rate", (("meter", "bucket-byte-seconds"), ("project", "p2")))] == 99
    assert s[("stratus_project_objects", (("kind", "Server"), ("project", "p1"), ("state", "SHUTOFF")))] == 1
    assert s[("stratus_index_objects", ())] == 3
    assert ("process_resident_memory_bytes", ()) in s


def test_index_replace_and_remove():
    idx = MeterIndex()
    e1 = entry_from_body(kind_by_plural("servers"), server(), "p")
    assert idx.put(e1) is None
    e2 = entry_from_body(kind_by_plural("servers"), server(phase="SHUTOFF"), "p")
    assert idx.put(e2) is e1
    assert len(idx) == 1 and idx.remove(e2.key) is e2 and len(idx) == 0


# --------------------------------------------------------------------------- the runtime

def runtime(interval=60, now=None) -> Metering:
    m = Metering(Config(metrics_port=0, interval=interval, grace=0))
    m.floor = 0
    m.resync_before_close = False
    m.ledger = Ledger(MemoryLedgerStore(), Signer.generate())
    return m


NS = {"ns1": ["acme"]}
SRV = kind_by_plural("servers")
T = lambda s: f"2026-01-01T00:{s // 60:02d}:{s % 60:02d}Z"  # noqa: E731
EPOCH0 = to_epoch(datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    "events, want_vcpu_seconds",
    [
        # (type, phase, ready transition second, deletion second)
        ([(None, "ACTIVE", 10, None)], 2 * (120 - 10)),
        ([(None, "ACTIVE", 10, None), ("MODIFIED", "SHUTOFF", 70, None)], 2 * 60),
        ([(None, "ACTIVE", 10, None), ("MODIFIED", "SHUTOFF", 40, None), ("MODIFIED", "ACTIVE", 100, None)],
         2 * (30 + 20)),
        ([(None, "ACTIVE", 10, None), ("MODIFIED", "ACTIVE", 10, 50), ("DELETED", "ACTIVE", 10, 50)], 2 * 40),
        ([(None, "BUILD", 5, None), ("MODIFIED", "ACTIVE", 30, None), ("MODIFIED", "ACTIVE", 30, None)], 2 * 90),
    ],
    ids=["active-throughout", "stopped", "stop-start", "deleted", "build-then-active-repeat"],
)
def test_transitions_are_billed_from_the_objects_timestamps(events, want_vcpu_seconds):
    m = runtime(interval=60)
    for type_, phase, ready, deleting in events:
        body = server(ns="ns1", phase=phase, ready_at=T(ready), deleting=T(deleting) if deleting is not None else None)
        m.on_event(SRV, type_, body, NS)
    m.tick(now=EPOCH0 + 120)
    recs = m.ledger.records("acme")
    assert [r.body["start"] for r in recs] == ["2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"]
    assert sum(r.usage.get("vcpu-seconds", 0) for r in recs) == want_vcpu_seconds
    assert verify([r.data for r in recs], Keyring([m.ledger.signer]))


def test_unlabelled_namespace_is_its_own_project():
    m = runtime()
    m.on_event(SRV, None, server(ns="lonely"), {})
    assert m.tracker.projects() == ["lonely"]


def test_restart_resumes_without_loss_or_duplicate(tmp_path):
    store = MemoryLedgerStore()
    signer = Signer.generate()
    m = runtime(interval=60)
    m.ledger = Ledger(store, signer)
    m.state = FileState(tmp_path / "state.json")
    m.on_event(SRV, None, server(ns="ns1", ready_at=T(10)), NS)
    m.tick(now=EPOCH0 + 60)  # closes [0, 60): 50 s
    m.on_event(SRV, "MODIFIED", server(ns="ns1", phase="SHUTOFF", ready_at=T(75)), NS)
    m._save()  # what the 1-second save does
    # crash; a new process loads the state and resumes from the ledger head
    m2 = runtime(interval=60)
    m2.state = FileState(tmp_path / "state.json")
    from stratus.core.metering import UsageTracker

    m2.tracker = UsageTracker.loads(m2.state.load())
    m2.ledger = Ledger(store, signer)
    m2.ledger.resume(m2.tracker, ["acme"])
    # the initial listing replays the object as it is now
    m2.on_event(SRV, None, server(ns="ns1", phase="SHUTOFF", ready_at=T(75)), NS)
    m2.tick(now=EPOCH0 + 60)  # closing [0, 60) again is a no-op
    m2.tick(now=EPOCH0 + 180)
    recs = m2.ledger.records("acme")
    assert [r.seq for r in recs] == [0, 1, 2]
    assert [r.usage.get("vcpu-seconds", 0) for r in recs] == [100, 30, 0]


def test_instrument_counts_runs_errors_and_latency():
    import kopf

    reg = kopf.OperatorRegistry()

    @kopf.on.event("stratus.dev", "v1alpha1", "things", registry=reg)
    def ok(**_):
        return 1

    @kopf.on.create("stratus.dev", "v1alpha1", "things", registry=reg)
    def flaky(**_):
        raise kopf.TemporaryError("later")

    ex = Exporter()
    assert instrument(reg, ex.health) == 2
    fns = [h.fn for h in reg._watching._handlers + reg._changing._handlers]
    fns[0]()
    with pytest.raises(kopf.TemporaryError):
        fns[1]()
    s = {(name, dict(labels)["handler"].rsplit(".", 1)[-1], dict(labels).get("outcome")): v
         for (name, labels), v in samples(ex.scrape()).items() if "handler" in dict(labels)}
    assert s[("stratus_handler_runs_total", "ok", "success")] == 1
    assert s[("stratus_handler_runs_total", "flaky", "retry")] == 1
    assert s[("stratus_handler_errors_total", "flaky", None)] == 1
    assert ("stratus_handler_errors_total", "ok", None) not in s
    assert s[("stratus_handler_duration_seconds_count", "ok", None)] == 1


def test_signing_key_secret_round_trip_keeps_old_keys():
    import base64

    a, b = Signer.generate(), Signer.generate()
    data = {"current": base64.b64encode(b.key_id.encode()).decode(),
            f"{a.key_id}.pem": base64.b64encode(a.private_pem()).decode(),
            f"{b.key_id}.pem": base64.b64encode(b.private_pem()).decode()}
    signer, ring = keys_from_secret_data(data)
    assert signer.key_id == b.key_id and set(ring.key_ids()) == {a.key_id, b.key_id}
    assert "PRIVATE" not in repr(signer)


@pytest.mark.parametrize("env, error", [
    ({"STRATUS_METERING_INTERVAL": "0"}, "positive"),
    ({"STRATUS_METER_KINDS": "servers,gadgets"}, "gadgets"),
])
def test_config_rejects_bad_settings(env, error):
    with pytest.raises(ValueError, match=error):
        Config.from_env(env)


def test_config_defaults():
    c = Config.from_env({"STRATUS_METERING_INTERVAL": "10"})
    assert (c.interval, c.grace, c.metrics_port) == (10, 2, 9090)
    assert Config.from_env({}).interval == 3600
    assert Config.from_env({}).ledger_dir == ""  # a developer's machine: off unless asked for
    assert Config.from_env({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}).ledger_dir == "/var/lib/stratus/ledger"


class _FakeKube:
    """Just the two list calls resync makes."""

    def __init__(self, servers):
        self.servers = servers

    def custom(self):
        fake = self

        class C:
            def list_cluster_custom_object(self, group, version, plural):
                if plural != "servers":
                    from kubernetes.client.rest import ApiException

                    raise ApiException(status=404)
                return {"items": fake.servers}
        return C()

    def core(self):
        class N:
            def list_namespace(self, label_selector):
                from types import SimpleNamespace as NS

                return NS(items=[NS(metadata=NS(name="ns1", labels={"stratus.dev/project": "acme"}))])
        return N()


@pytest.mark.parametrize(
    "listed, want",
    [
        # the world moved on while events were held up (a paused or restarting operator)
        ([server(ns="ns1", phase="SHUTOFF", ready_at=T(40))], 2 * 30),
        # nothing changed
        ([server(ns="ns1", ready_at=T(10))], 2 * 110),
        # deleted without an event: stops accruing at the resync (now = 120 s here)
        ([], None),
    ],
    ids=["stopped-unseen", "unchanged", "vanished"],
)
def test_resync_before_close_uses_the_objects_own_timestamps(monkeypatch, listed, want):
    import stratus.drivers.metering as metering

    m = runtime(interval=60)
    m.on_event(SRV, None, server(ns="ns1", ready_at=T(10)), NS)
    m.index.remove(("Server", "ns1", "s1"))  # a fresh process: the index is empty, the tracker was loaded
    monkeypatch.setattr(metering, "kube", _FakeKube(listed))
    m.resync()
    m.tick(now=EPOCH0 + 120)
    total = sum(r.usage.get("vcpu-seconds", 0) for r in m.ledger.records("acme"))
    if want is None:
        assert 2 * 110 <= total  # billed up to the moment it was found gone, never less
        assert "u1" not in m.tracker.resources("acme")
    else:
        assert total == want
