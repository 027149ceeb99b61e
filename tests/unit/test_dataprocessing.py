"""Data processing (Sahara): the pure logic of DataCluster and DataJob, table by table."""

from __future__ import annotations

import json

import pytest

from stratus.api.datacluster import sample as cluster_sample
from stratus.api.datajob import sample as job_sample
from stratus.core import dataprocessing as dp
from stratus.instance import spark as sparkengine


def _cluster(**spec):
    body = cluster_sample(**spec)
    body["metadata"].update(namespace="proj", uid="u-1")
    return body


@pytest.mark.parametrize("config, field, role, reason", [
    ({"spark.deploy.spreadOut": "false"}, "spec.config", None, None),
    ({"spark.worker.cleanup.enabled": "true"}, "spec.nodeGroups[1].config", "worker", None),
    ({"spark.nope": "1"}, "spec.config", None, "UnknownConfigKey"),
    ({"spark.deploy.spreadOut": "false"}, "spec.nodeGroups[1].config", "worker", "ConfigKeyNotForRole"),
    ({"spark.network.timeout": "120s"}, "spec.nodeGroups[0].config", "master", None),
    ({"spark.network.timeout": "1 20s"}, "spec.config", None, "InvalidConfigValue"),
])
def test_config_keys(config, field, role, reason):
    if reason is None:
        dp.check_config(config, field, role)
        return
    with pytest.raises(dp.Invalid) as exc:
        dp.check_config(config, field, role)
    assert exc.value.reason == reason
    assert field in exc.value.message and next(iter(config)) in exc.value.message


@pytest.mark.parametrize("change, reason", [
    ({}, None),
    ({"version": "3.0.0"}, "UnsupportedVersion"),
    ({"framework": "hadoop"}, "UnknownFramework"),
    ({"nodeGroups": [{"name": "w", "role": "worker", "count": 2, "flavor": "f"}]}, "InvalidTopology"),
    ({"nodeGroups": [{"name": "m", "role": "master", "count": 2, "flavor": "f"}]}, "InvalidTopology"),
])
def test_cluster_checks(change, reason):
    spec = {**_cluster()["spec"], **change}
    if reason is None:
        dp.check_cluster(spec)
    else:
        with pytest.raises(dp.Invalid) as exc:
            dp.check_cluster(spec)
        assert exc.value.reason == reason


def test_worker_pod_is_sized_by_its_flavor_and_names_its_master():
    body = _cluster(config={"spark.deploy.spreadOut": "false", "spark.worker.cleanup.enabled": "true"})
    group = body["spec"]["nodeGroups"][1] | {"antiAffinity": "Required"}
    size = dp.size_of({"vcpus": 2, "ram": "1536Mi"}, "256Mi")
    pod = dp.node_pod(body, group, 1, size, "spark://127.0.0.1:4000")
    c = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert pod["metadata"]["name"] == "spark-workers-1"
    assert c["command"] == ["stratus", "spark", "worker"]
    assert env["SPARK_WORKER_CORES"] == "2" and env["SPARK_WORKER_MEMORY"] == "1280m" and env["SPARK_DAEMON_MEMORY"] == "256m"
    assert env["STRATUS_SPARK_MASTER"] == "spark://127.0.0.1:4000"
    assert env["SPARK_WORKER_OPTS"] == "-Dspark.worker.cleanup.enabled=true"  # the master's key stays with the master
    assert pod["metadata"]["labels"][dp.ENGINE_LABEL] == "spark-worker"
    assert "requiredDuringSchedulingIgnoredDuringExecution" in pod["spec"]["affinity"]["podAntiAffinity"]
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "1536Mi"}


def _pod(name, annotations=None, deleting=False, ip=None):
    p = {"metadata": {"name": name, "annotations": annotations or {}}, "spec": {"containers": [
        {"ports": [{"name": "spark", "containerPort": 7077}, {"name": "ui", "containerPort": 8080}]}]}, "status": {}}
    if deleting:
        p["metadata"]["deletionTimestamp"] = "now"
    if ip:
        p["status"]["podIP"] = ip
    return p


URL = "spark://127.0.0.1:4000"


@pytest.mark.parametrize("name, existing, count, create, delete", [
    ("fresh", [], 2, [0, 1], []),
    ("steady", [_pod("c-w-0", {dp.MASTER_URL_ANNOTATION: URL}), _pod("c-w-1", {dp.MASTER_URL_ANNOTATION: URL})], 2, [], []),
    ("scale up", [_pod("c-w-0", {dp.MASTER_URL_ANNOTATION: URL})], 3, [1, 2], []),
    ("scale down, highest first", [_pod(f"c-w-{i}", {dp.MASTER_URL_ANNOTATION: URL}) for i in range(3)], 1, [], ["c-w-2", "c-w-1"]),
    ("master moved", [_pod("c-w-0", {dp.MASTER_URL_ANNOTATION: "spark://127.0.0.1:1"})], 1, [0], ["c-w-0"]),
    ("terminating pod waits", [_pod("c-w-0", deleting=True)], 1, [], []),
])
def test_plan_group(name, existing, count, create, delete):
    plan = dp.plan_group(existing, count, URL)
    assert (plan.create, plan.delete) == (create, delete), name


def test_master_url_local_and_real():
    local = _pod("c-master-0", {dp.PORTS_ANNOTATION: json.dumps({"spark": 4000, "ui": 4001})})
    assert dp.master_url(local, "c", "ns") == "spark://127.0.0.1:4000"
    assert dp.web_ui(local) == "http://127.0.0.1:4001"
    real = _pod("c-master-0", ip="10.0.0.5")
    assert dp.master_url(real, "c", "ns") == "spark://c-master.ns.svc:7077"
    assert dp.master_url(_pod("c-master-0"), "c", "ns") is None


def test_worker_registration_is_matched_by_endpoint():
    master = {"workers": [{"host": "127.0.0.1", "port": 5000, "state": "ALIVE"}, {"host": "127.0.0.1", "port": 5001, "state": "DEAD"}]}
    alive = dp.alive_workers(master)
    assert dp.worker_registered(_pod("w-0", {dp.PORTS_ANNOTATION: json.dumps({"spark": 5000})}), alive)
    assert not dp.worker_registered(_pod("w-1", {dp.PORTS_ANNOTATION: json.dumps({"spark": 5001})}), alive)


BASE = dict(deleting=False, invalid=False, stopped=False, master_running=True, master_answers=True,
            ready={"m": 1, "w": 2}, desired={"m": 1, "w": 2}, pods_running=True, was_active=False)


@pytest.mark.parametrize("change, phase", [
    ({}, dp.Phase.ACTIVE),
    ({"deleting": True}, dp.Phase.DELETING),
    ({"invalid": True}, dp.Phase.ERROR),
    ({"stopped": True}, dp.Phase.STOPPED),
    ({"master_running": False, "master_answers": False, "ready": {}}, dp.Phase.SPAWNING),
    ({"master_answers": False, "ready": {}}, dp.Phase.CONFIGURING),
    ({"ready": {"m": 1, "w": 1}}, dp.Phase.STARTING),
    ({"ready": {"m": 1, "w": 1}, "was_active": True}, dp.Phase.SCALING),
    ({"ready": {"m": 1, "w": 2}, "desired": {"m": 1, "w": 3}, "was_active": True}, dp.Phase.SCALING),
])
def test_decide_phase(change, phase):
    assert dp.decide_phase(**{**BASE, **change}) == phase


def _driver(attempt, exit_code=None, message=""):
    ann = {}
    if exit_code is not None:
        ann = {dp.EXIT_ANNOTATION: str(exit_code), dp.TERMINATION_ANNOTATION: message}
    return {"metadata": {"name": f"j-driver-{attempt}", "annotations": ann}, "status": {}}


TRACE = "INFO starting\nTraceback (most recent call last):\n  File \"main.py\", line 3\nValueError: the input is empty\nINFO SparkContext stopped"


@pytest.mark.parametrize("name, kwargs, phase, create, reason", [
    ("waits for the cluster", dict(attempts={}, cluster_ready=False), dp.JobPhase.PENDING, None, "ClusterNotReady"),
    ("submits once", dict(attempts={}), dp.JobPhase.PENDING, 1, "Submitting"),
    ("running (also after an operator restart)", dict(attempts={1: _driver(1)}), dp.JobPhase.RUNNING, None, "Running"),
    ("succeeded", dict(attempts={1: _driver(1, 0)}), dp.JobPhase.SUCCEEDED, None, "Succeeded"),
    ("failed, no retries", dict(attempts={1: _driver(1, 1, TRACE)}), dp.JobPhase.FAILED, None, "ApplicationFailed"),
    ("failed, retried", dict(attempts={1: _driver(1, 1, TRACE)}, retries=1), dp.JobPhase.RUNNING, 2, "Retrying"),
    ("retries used up", dict(attempts={1: _driver(1, 1), 2: _driver(2, 1)}, retries=1), dp.JobPhase.FAILED, None, "ApplicationFailed"),
    ("killed", dict(attempts={1: _driver(1)}, kill=True), dp.JobPhase.KILLED, None, "Killed"),
    ("timed out", dict(attempts={1: _driver(1)}, timed_out=True), dp.JobPhase.FAILED, None, "DeadlineExceeded"),
    ("final stays", dict(attempts={}, phase=dp.JobPhase.SUCCEEDED, kill=True), dp.JobPhase.SUCCEEDED, None, ""),
])
def test_decide_job(name, kwargs, phase, create, reason):
    args = dict(phase=dp.JobPhase.PENDING, retries=0, kill=False, timed_out=False, cluster_ready=True) | kwargs
    d = dp.decide_job(**args)
    assert (d.phase, d.create_attempt, d.reason) == (phase, create, reason), name
    if reason == "ApplicationFailed" and "Traceback" in args["attempts"][1]["metadata"]["annotations"].get(dp.TERMINATION_ANNOTATION, ""):
        assert d.message == "ValueError: the input is empty"
    if reason in ("Killed", "DeadlineExceeded"):
        assert d.delete_pods == ("j-driver-1",)


@pytest.mark.parametrize("text, reason", [
    (TRACE, "ValueError: the input is empty"),
    ("Exception in thread \"main\" java.lang.ClassNotFoundException: x.Y\nINFO bye", "java.lang.ClassNotFoundException: x.Y"),
    ("", "the driver exited without a message"),
])
def test_failure_reason(text, reason):
    assert reason in dp.failure_reason(text)


def _job(**spec):
    body = job_sample(**spec)
    body["metadata"].update(namespace="proj", uid="u-2")
    return body


BUCKET = {"metadata": {"name": "data"}, "status": {"secretName": "data", "configMapName": "data", "bucketName": "proj-data-1234"}}


def test_driver_pod_references_bucket_credentials_and_never_copies_them():
    job = _job(args=["{words}", "{counts}", "--x"], inputs=[{"name": "words", "bucket": "data", "path": "in/"}],
               outputs=[{"name": "counts", "bucket": "data", "path": "out"}], conf={"spark.sql.shuffle.partitions": "2"})
    pod = dp.driver_pod(job, 2, "spark://127.0.0.1:4000", "img", [BUCKET], {"data": "proj-data-1234"})
    c = pod["spec"]["containers"][0]
    assert pod["metadata"]["name"] == "wordcount-driver-2" and pod["spec"]["restartPolicy"] == "Never"
    assert c["args"] == ["s3a://proj-data-1234/in/", "s3a://proj-data-1234/out", "--x"]
    env = {e["name"]: e for e in c["env"]}
    assert env["STRATUS_BUCKET_0_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "data", "key": "AWS_SECRET_ACCESS_KEY"}
    assert env["STRATUS_SPARK_APP_NAME"]["value"] == "proj.wordcount.2"
    assert env["STRATUS_SPARK_RESOURCE"]["value"] == "/opt/stratus/app/main.py"
    assert json.loads(env["STRATUS_SPARK_CONF"]["value"])["spark.stratus.source.words"] == "s3a://proj-data-1234/in/"
    assert pod["spec"]["volumes"][0]["configMap"]["name"] == "wordcount-app"
    assert all("value" in e or "valueFrom" in e for e in c["env"])


def test_bucket_properties_and_argv_keep_secrets_out_of_argv(tmp_path):
    env = {"STRATUS_SPARK_BUCKETS": "1", "STRATUS_BUCKET_0_NAME": "b1", "STRATUS_BUCKET_0_ENDPOINT": "http://127.0.0.1:7480",
           "STRATUS_BUCKET_0_REGION": "us-east-1", "STRATUS_BUCKET_0_ACCESS_KEY": "AK", "STRATUS_BUCKET_0_SECRET_KEY": "SK-secret",
           "STRATUS_SPARK_MASTER": "spark://h:1", "STRATUS_SPARK_RESOURCE": "/app/main.py", "STRATUS_SPARK_EXECUTORS": "2",
           "STRATUS_SPARK_EXECUTOR_CORES": "1", "STRATUS_SPARK_MAIN_CLASS": ""}
    props = sparkengine.bucket_properties(env)
    assert props["spark.hadoop.fs.s3a.bucket.b1.secret.key"] == "SK-secret"
    assert props["spark.hadoop.fs.s3a.bucket.b1.connection.ssl.enabled"] == "false"
    argv = sparkengine.submit_argv(env, tmp_path, str(tmp_path / "p"), ["a"])
    assert "SK-secret" not in " ".join(argv)
    assert argv[argv.index("--total-executor-cores") + 1] == "2" and argv[-2:] == ["/app/main.py", "a"]


def test_termination_message_keeps_the_exception_line():
    lines = TRACE.splitlines()[:4] + [f"INFO line {i}" for i in range(100)]
    msg = sparkengine.termination_message(lines, 1)
    assert msg.startswith("ValueError: the input is empty") and "INFO line 99" in msg
    assert dp.failure_reason(msg) == "ValueError: the input is empty"


def test_find_application_by_name():
    master = {"activeapps": [{"id": "app-2", "name": "ns.j.2"}], "completedapps": [{"id": "app-1", "name": "ns.j.1"}]}
    assert dp.find_application(master, "ns.j.1")["id"] == "app-1"
    assert dp.find_application(master, "ns.j.2")["id"] == "app-2"
    assert dp.find_application(None, "x") is None


# ---------------------------------------------------------------------------- schedules

import datetime as _dt  # noqa: E402


def _t(text: str) -> float:
    return _dt.datetime.fromisoformat(text).replace(tzinfo=_dt.timezone.utc).timestamp()


@pytest.mark.parametrize("expression, ok", [("*/5 * * * *", True), ("0 3 * * 1-5", True), ("* * *", False), ("61 * * * *", False), ("@hourly", False)])
def test_check_schedule(expression, ok):
    if ok:
        dp.check_schedule(expression)
    else:
        with pytest.raises(dp.Invalid, match="spec.schedule"):
            dp.check_schedule(expression)


@pytest.mark.parametrize("after, until, due, nxt", [
    ("2026-12-03 10:00:30", "2026-12-03 10:03:59", "2026-12-03 10:02:00", "2026-12-03 10:04:00"),  # one due
    ("2026-12-03 10:00:30", "2026-12-03 10:01:59", None, "2026-12-03 10:02:00"),  # none due yet
    ("2026-12-03 09:00:00", "2026-12-03 10:05:00", "2026-12-03 10:04:00", "2026-12-03 10:06:00"),  # missed: only the latest
])
def test_schedule_times(after, until, due, nxt):
    got_due, got_next = dp.schedule_times("*/2 * * * *", _t(after), _t(until))
    assert got_due == (_t(due) if due else None) and got_next == _t(nxt)


def _run(name, phase="", created="2026-12-03T10:00:00Z"):
    return {"metadata": {"name": name, "creationTimestamp": created}, "status": {"phase": phase} if phase else {}}


DUE = _t("2026-12-03 10:02:00")
DUE_NAME = dp.run_name("nightly", DUE)


@pytest.mark.parametrize("name, kwargs, create, delete, skipped", [
    ("due, nothing active", dict(runs=[]), DUE_NAME, (), False),
    ("already made (restart)", dict(runs=[_run(DUE_NAME, "RUNNING")]), None, (), False),
    ("forbid while active", dict(runs=[_run("nightly-1", "RUNNING")]), None, (), True),
    ("allow overlaps", dict(runs=[_run("nightly-1", "RUNNING")], policy="Allow"), DUE_NAME, (), False),
    ("replace kills the active", dict(runs=[_run("nightly-1", "RUNNING")], policy="Replace"), DUE_NAME, ("nightly-1",), False),
    ("suspended", dict(runs=[], suspend=True), None, (), False),
    ("history limits, oldest go", dict(due=None, runs=[
        _run("n-1", "SUCCEEDED", "2026-12-03T10:01:00Z"), _run("n-2", "SUCCEEDED", "2026-12-03T10:02:00Z"),
        _run("n-3", "FAILED", "2026-12-03T10:03:00Z"), _run("n-4", "KILLED", "2026-12-03T10:04:00Z")]), None, ("n-1", "n-3"), False),
])
def test_decide_schedule(name, kwargs, create, delete, skipped):
    args = dict(name="nightly", due=DUE, policy="Forbid", suspend=False, keep_succeeded=1, keep_failed=1) | kwargs
    d = dp.decide_schedule(**args)
    assert (d.create, d.delete, d.skipped) == (create, delete, skipped), name
