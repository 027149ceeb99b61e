"""Metering on the real control plane with the real operator: /metrics against the
cluster's objects, servers billed to the second across stop/start and operator crashes,
tampering caught by `stratus meter verify`, key rotation.

The operator runs with a 6-second interval and a 3-second grace so intervals close
while the tests watch. Billing is compared with the ACTIVE periods the Server's own
status records (the Ready condition's lastTransitionTime when it enters and leaves
ACTIVE, and the deletionTimestamp). Those are whole seconds, and so is the ledger, and
the operator bills from those very timestamps, so the comparison is exact: a tolerance
of zero seconds. A difference would mean an event was missed, applied late (after its
interval closed) or counted twice.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .kube import wait_for

INTERVAL = 6
GRACE = 3
GiB = 1 << 30


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def metering(kube, operator, tmp_path_factory):
    """The session operator, restarted with metering settings; restored afterwards."""
    from stratus.dev.run import free_port

    sys_ns = f"t-metering-sys-{uuid.uuid4().hex[:5]}"
    kube.core.create_namespace({"metadata": {"name": sys_ns, "labels": {"stratus.dev/test": "true"}}})
    ledger = tmp_path_factory.mktemp("ledger")
    port = free_port()
    env = {
        "STRATUS_METRICS_PORT": str(port),
        "STRATUS_LEDGER_DIR": str(ledger),
        "STRATUS_METERING_INTERVAL": str(INTERVAL),
        "STRATUS_METERING_GRACE": str(GRACE),
        "STRATUS_NAMESPACE": sys_ns,
    }
    operator.stop()
    operator.start(env)
    # A scraper as Prometheus would be one: a ServiceAccount bound to stratus-metrics-reader.
    kube.core.create_namespaced_service_account(sys_ns, {"metadata": {"name": "scraper"}})
    kube.rbac.create_cluster_role_binding({
        "metadata": {"name": f"{sys_ns}-scraper"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "stratus-metrics-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "scraper", "namespace": sys_ns}]})
    kube.core.create_namespaced_service_account(sys_ns, {"metadata": {"name": "nosy"}})
    token = kube.core.create_namespaced_service_account_token("scraper", sys_ns, {"spec": {"expirationSeconds": 3600}}).status.token
    m = Metering(kube, operator, env, ledger, port, sys_ns, token)
    wait_for(m.scrape, 60, what="/metrics to answer")
    yield m
    operator.stop()
    operator.start()
    kube.rbac.delete_cluster_role_binding(f"{sys_ns}-scraper")
    kube.core.delete_namespace(sys_ns)


class Metering:
    def __init__(self, kube, operator, env, ledger: pathlib.Path, port: int, sys_ns: str, token: str):
        self.kube, self.operator, self.env, self.ledger, self.port, self.sys_ns = kube, operator, env, ledger, port, sys_ns
        self.token = token

    def restart(self, kill: bool = True) -> None:
        self.operator.kill() if kill else self.operator.stop()
        self.operator.start(self.env)

    def scrape(self) -> dict[tuple[str, tuple], float]:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{self.port}/metrics",
                                         headers={"Authorization": f"Bearer {self.token}"})
            with urllib.request.urlopen(req, timeout=10) as r:
                text = r.read().decode()
        except OSError:
            return {}
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text) for s in fam.samples}

    def meter(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "KUBECONFIG": self.kube.kubeconfig, "STRATUS_NAMESPACE": self.sys_ns}
        return subprocess.run([sys.executable, "-m", "stratus", "meter", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    def files(self, project: str, root: pathlib.Path | None = None) -> list[pathlib.Path]:
        return sorted((root or self.ledger).glob(f"{project}/*/*.json"))

    def records(self, project: str) -> list[dict]:
        return [json.loads(p.read_bytes()) for p in self.files(project)]

    def recorded_until(self, project: str) -> int:
        recs = self.records(project)
        return epoch(recs[-1]["end"]) if recs else 0

    def export(self, project: str, fmt: str = "json") -> str:
        res = self.meter("export", "--project", project, "--format", fmt, "--ledger-dir", str(self.ledger))
        assert res.returncode == 0, res.stderr
        return res.stdout


def epoch(ts: str) -> int:
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())


def flavor(kube, vcpus: int, ram: str) -> str:
    name = f"f-{uuid.uuid4().hex[:8]}"
    kube.create("flavors", {"kind": "Flavor", "metadata": {"name": name}, "spec": {"vcpus": vcpus, "ram": ram}})
    return name


def create_server(kube, ns: str, name: str, flavor_name: str, **spec) -> None:
    kube.create("servers", {"kind": "Server", "metadata": {"name": name},
                            "spec": {"flavor": flavor_name, "containerDisk": "quay.io/containerdisks/fedora:41",
                                     **spec}}, ns)


def in_phase(kube, ns: str, name: str, phase: str) -> dict:
    def check():
        s = kube.get("servers", name, ns)
        return s if s and (s.get("status") or {}).get("phase") == phase else None
    return wait_for(check, 90, what=f"Server {name} {phase}")


def ready_since(kube, obj: dict) -> int:
    return epoch(kube.condition(obj)["lastTransitionTime"])


def power(kube, ns: str, name: str, state: str) -> None:
    kube.patch("servers", name, {"spec": {"powerState": state}}, ns)


def delete_and_time(kube, ns: str, name: str) -> int:
    kube.delete("servers", name, ns)
    obj = wait_for(lambda: (o := kube.get("servers", name, ns)) and o["metadata"].get("deletionTimestamp") and o,
                   30, what="the deletionTimestamp")
    return epoch(obj["metadata"]["deletionTimestamp"])


def billed(m: Metering, project: str, after: int) -> dict:
    """The export, once intervals up to `after` are recorded."""
    wait_for(lambda: m.recorded_until(project) > after, INTERVAL * 4 + GRACE + 30,
             what=f"records of {project} past {after}")
    return json.loads(m.export(project))["totals"][project]


def mid_interval() -> None:
    """Sleep until the middle of the current interval."""
    t = time.time()
    target = (int(t) // INTERVAL) * INTERVAL + INTERVAL / 2
    if target <= t:
        target += INTERVAL
    time.sleep(target - t)


# --------------------------------------------------------------------------- the exporter


def _status(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_metrics_answer_only_callers_allowed_to_get_them(kube, metering):
    """Every tenant's object names are in /metrics: no token is 401, a token without the
    stratus-metrics-reader binding is 403, a bad token is 401; only the scraper reads."""
    url = f"http://127.0.0.1:{metering.port}/metrics"
    nosy = kube.core.create_namespaced_service_account_token("nosy", metering.sys_ns,
                                                             {"spec": {"expirationSeconds": 600}}).status.token
    assert _status(url, None) == 401
    assert _status(url, "not-a-token") == 401
    assert _status(url, nosy) == 403
    assert _status(url, metering.token) == 200


def test_exporter_figures_match_the_cluster(kube, metering, namespace):
    big, small = flavor(kube, 2, "4Gi"), flavor(kube, 1, "1Gi")
    create_server(kube, namespace, "a", big)
    create_server(kube, namespace, "b", small, powerState="Stopped")
    in_phase(kube, namespace, "a", "ACTIVE")
    in_phase(kube, namespace, "b", "SHUTOFF")

    def matches():
        s = metering.scrape()
        servers = kube.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", namespace, "servers")["items"]
        for srv in servers:
            obj = (("name", srv["metadata"]["name"]), ("namespace", namespace), ("project", namespace))
            st = srv["status"]
            want = {
                "stratus_server_vcpus": st["vcpus"],
                "stratus_server_memory_bytes": {"4Gi": 4 * GiB, "1Gi": GiB}[st["memory"]],
                "stratus_server_running": 1 if st["phase"] == "ACTIVE" else 0,
            }
            for name, value in want.items():
                if s.get((name, obj)) != value:
                    return None
            info = tuple(sorted(obj + (("flavor", srv["spec"]["flavor"]), ("node", st.get("node", "")),
                                       ("state", st["phase"]))))
            if s.get(("stratus_server_info", info)) != 1:
                return None
        exported = {dict(k[1])["name"] for k in s if k[0] == "stratus_server_vcpus"
                    and dict(k[1])["namespace"] == namespace}
        if exported != {srv["metadata"]["name"] for srv in servers}:
            return None
        rate = s.get(("stratus_project_usage_rate", (("meter", "vcpu-seconds"), ("project", namespace))))
        return s if rate == 2 else None  # only the running server accrues vCPU-seconds

    s = wait_for(matches, 60, what="/metrics to match the Servers in the cluster")
    assert s[("stratus_handler_runs_total", (("handler", "reconcile_server"), ("outcome", "success"),
                                             ("resource", "servers")))] >= 1
    assert any(k[0] == "stratus_handler_duration_seconds_bucket" for k in s)

    kube.delete("servers", "b", namespace)
    gone = (("name", "b"), ("namespace", namespace), ("project", namespace))
    wait_for(lambda: ("stratus_server_vcpus", gone) not in metering.scrape(), 60, what="b to leave /metrics")


def test_objects_are_attributed_to_the_project_that_owns_their_namespace(kube, metering):
    project = f"acme-{uuid.uuid4().hex[:5]}"
    kube.create("projects", {"kind": "Project", "metadata": {"name": project}, "spec": {}})
    try:
        wait_for(lambda: (kube.get("projects", project) or {}).get("status", {}).get("namespace") == project, 60,
                 what="the Project's namespace")
        kube.create("volumes", {"kind": "Volume", "metadata": {"name": "data"}, "spec": {"size": "2Gi"}}, project)
        obj = (("name", "data"), ("namespace", project), ("project", project))

        def seen():
            s = metering.scrape()
            vol = kube.get("volumes", "data", project)
            size = (vol.get("status") or {}).get("size") or vol["spec"]["size"]
            want = {"2Gi": 2 * GiB}.get(size, size)
            return s if s.get(("stratus_volume_size_bytes", obj)) == want else None

        s = wait_for(seen, 60, what="the Volume in /metrics under its Project")
        assert sum(v for k, v in s.items() if k[0] == "stratus_project_objects"
                   and dict(k[1])["project"] == project and dict(k[1])["kind"] == "Volume") == 1
        rate = sum(v for k, v in s.items() if k[0] == "stratus_project_usage_rate"
                   and dict(k[1])["project"] == project and dict(k[1])["meter"].startswith("volume-byte-seconds"))
        assert rate == 2 * GiB
    finally:
        kube.delete("projects", project)


# --------------------------------------------------------------------------- billing


def test_server_billed_to_the_second_across_stop_and_start(kube, metering, namespace):
    create_server(kube, namespace, "web", flavor(kube, 2, "1Gi"))
    t1 = ready_since(kube, in_phase(kube, namespace, "web", "ACTIVE"))
    time.sleep(4)
    power(kube, namespace, "web", "Stopped")
    t2 = ready_since(kube, in_phase(kube, namespace, "web", "SHUTOFF"))
    time.sleep(3)
    power(kube, namespace, "web", "Running")
    t3 = ready_since(kube, in_phase(kube, namespace, "web", "ACTIVE"))
    time.sleep(4)
    t4 = delete_and_time(kube, namespace, "web")
    active = (t2 - t1) + (t4 - t3)
    assert t1 < t2 < t3 < t4

    totals = billed(metering, namespace, t4)
    assert totals["vcpu-seconds"] == 2 * active, (totals, active)
    assert totals["memory-byte-seconds"] == GiB * active
    csv_rows = metering.export(namespace, "csv").splitlines()
    assert csv_rows[0] == "project,record,seq,start,end,meter,quantity"
    assert sum(int(r.split(",")[-1]) for r in csv_rows[1:] if ",vcpu-seconds," in r) == 2 * active
    res = metering.meter("verify", "--project", namespace, "--ledger-dir", str(metering.ledger))
    assert res.returncode == 0 and res.stdout.startswith("OK"), res.stdout + res.stderr


def test_operator_crashes_mid_interval_lose_and_duplicate_nothing(kube, metering, namespace):
    create_server(kube, namespace, "db", flavor(kube, 2, "1Gi"))
    t1 = ready_since(kube, in_phase(kube, namespace, "db", "ACTIVE"))
    wait_for(lambda: metering.recorded_until(namespace) > t1, 60, what="a first closed interval")

    # 1: crash while the server runs; the outage spans an interval boundary.
    mid_interval()
    metering.restart(kill=True)
    time.sleep(INTERVAL)
    wait_for(metering.scrape, 60, what="the operator back")

    # 2: stop it, crash in the same interval once the state had its second to be saved,
    #    and start it again while the operator is still down.
    power(kube, namespace, "db", "Stopped")
    t2 = ready_since(kube, in_phase(kube, namespace, "db", "SHUTOFF"))
    time.sleep(1.5)
    metering.operator.kill()
    time.sleep(2)
    metering.operator.start(metering.env)
    power(kube, namespace, "db", "Running")
    t3 = ready_since(kube, in_phase(kube, namespace, "db", "ACTIVE"))
    time.sleep(3)
    t4 = delete_and_time(kube, namespace, "db")
    active = (t2 - t1) + (t4 - t3)

    totals = billed(metering, namespace, t4)
    assert totals["vcpu-seconds"] == 2 * active, (totals, active)
    recs = metering.records(namespace)
    assert [r["seq"] for r in recs] == list(range(len(recs)))
    assert all(a["end"] == b["start"] for a, b in zip(recs, recs[1:]))
    assert len({r["id"] for r in recs}) == len(recs)
    res = metering.meter("verify", "--project", namespace, "--ledger-dir", str(metering.ledger))
    assert res.returncode == 0, res.stdout + res.stderr


# --------------------------------------------------------------------------- verification


@pytest.fixture
def ledger_copy(kube, metering, namespace, tmp_path):
    """A copy of a project's chain of at least five records, to tamper with."""
    create_server(kube, namespace, "v", flavor(kube, 1, "1Gi"))
    in_phase(kube, namespace, "v", "ACTIVE")
    wait_for(lambda: len(metering.files(namespace)) >= 5, INTERVAL * 8 + 30, what="five records")
    root = tmp_path / "ledger"
    shutil.copytree(metering.ledger / namespace, root / namespace)
    for f in root.rglob("*.json"):
        f.chmod(0o644)
    return root


def _verify(metering, root, *extra):
    return metering.meter("verify", "--ledger-dir", str(root), "--namespace", metering.sys_ns, *extra)


def test_verify_catches_an_edit_a_deletion_and_a_reordering(metering, namespace, ledger_copy):
    files = metering.files(namespace, ledger_copy)
    ids = [f"{namespace}/{f.stem}" for f in files]
    res = _verify(metering, ledger_copy)
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout + res.stderr

    # one byte edited: a digit of a quantity (or of the timestamp) in record #2
    original = files[2].read_bytes()
    i = original.index(b'"seq":') + len(b'"seq":')
    files[2].write_bytes(original[:i] + bytes([original[i] ^ 0x01]) + original[i + 1:])
    res = _verify(metering, ledger_copy)
    assert res.returncode == 1 and ids[2] in res.stdout, res.stdout + res.stderr
    assert "BadSignature" in res.stdout or "Malformed" in res.stdout, res.stdout
    files[2].write_bytes(original)

    # a record deleted: the next one is named, with the missing sequence number
    kept = files[2].read_bytes()
    files[2].unlink()
    res = _verify(metering, ledger_copy)
    assert res.returncode == 1 and ids[3] in res.stdout and "Gap" in res.stdout and "seq 2" in res.stdout, res.stdout
    files[2].write_bytes(kept)

    # a pair reordered: records 1 and 2 swap places
    one, two = files[1].read_bytes(), files[2].read_bytes()
    files[1].write_bytes(two)
    files[2].write_bytes(one)
    res = _verify(metering, ledger_copy)
    assert res.returncode == 1, res.stdout
    assert f"record #1 ({ids[2]}, seq 2): Reordered: seq 2 comes before seq 1" in res.stdout, res.stdout
    files[1].write_bytes(one)
    files[2].write_bytes(two)

    # a deleted tail is caught against the published head
    last = files[-1]
    digest = _sha256(last.read_bytes())
    seq = json.loads(last.read_bytes())["seq"]
    last.unlink()
    res = _verify(metering, ledger_copy, "--head", f"{namespace}={seq}:{digest}")
    assert res.returncode == 1 and "Truncated" in res.stdout, res.stdout


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_key_rotation_keeps_old_records_verifiable(kube, metering, namespace):
    create_server(kube, namespace, "k", flavor(kube, 1, "1Gi"))
    in_phase(kube, namespace, "k", "ACTIVE")
    wait_for(lambda: len(metering.files(namespace)) >= 1, INTERVAL * 4 + 30, what="a record")
    old_key = metering.records(namespace)[0]["key"]
    res = metering.meter("rotate-key", "--namespace", metering.sys_ns)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: metering.records(namespace)[-1]["key"] != old_key, INTERVAL * 4 + 30,
             what="a record signed by the new key")
    cm = kube.core.read_namespaced_config_map("stratus-ledger-keys", metering.sys_ns)
    jwks = json.loads(cm.data["jwks.json"])
    assert len(jwks["keys"]) >= 2 and all("d" not in k for k in jwks["keys"])  # public halves only
    res = metering.meter("verify", "--project", namespace, "--ledger-dir", str(metering.ledger),
                         "--namespace", metering.sys_ns)
    assert res.returncode == 0, res.stdout + res.stderr
    # the signing key is in the Secret and nowhere in the operator's log
    secret = kube.core.read_namespaced_secret("stratus-ledger-signing-key", metering.sys_ns)
    import base64

    for name, value in secret.data.items():
        if name.endswith(".pem"):
            body = base64.b64decode(value).decode().splitlines()[1]
            assert body not in metering.operator.tail(100000)
