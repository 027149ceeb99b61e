"""Data processing (Sahara) with real Apache Spark and the real S3 server.

One DataCluster (1 master, 2 workers) is made for the module; the local pod runner runs its
Pods' containers as real Spark daemons. The tests run in file order: the cluster becomes
Active with both workers registered with the master (read from the master itself); a PySpark
word count reads three objects of a Bucket over s3a and writes the counts back; a failing job
reports FAILED with the exception's message; a job survives an operator restart without being
submitted twice; a schedule runs jobs on time and keeps its history limit; the worker group scales 2 -> 3 -> 1; deleting the DataCluster stops every
Spark process it started.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
from kubernetes.client.rest import ApiException

from .kube import pid_alive, wait_for
from .test_buckets import ensure_bucket_class, make_bucket, workload_client

# Status refreshes on a timer; the operator started for this session reads this.
os.environ.setdefault("STRATUS_DATA_POLL", "1")

FLAVOR = "spark.tiny"
CLUSTER = "spark"
SPARK_START = 420  # JVMs on 2 cores shared with other work

WORDCOUNT = """\
import sys
from pyspark.sql import SparkSession
src, dst = sys.argv[1], sys.argv[2]
spark = SparkSession.builder.getOrCreate()
counts = (spark.sparkContext.textFile(src).flatMap(lambda line: line.split())
          .map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b))
counts.map(lambda kv: f"{kv[0]}\\t{kv[1]}").coalesce(1).saveAsTextFile(dst)
"""

FAILING = """\
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
n = spark.sparkContext.parallelize(range(10), 2).count()
raise ValueError(f"no usable rows among {n}: the input table is empty")
"""

SLOW = """\
import time
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
time.sleep(20)
print("sum", spark.sparkContext.parallelize(range(1000), 2).sum())
"""

TEXTS = {"in/a.txt": "the quick brown fox\njumps over the lazy dog\n",
         "in/b.txt": "the dog barks\nthe fox runs\n",
         "in/c.txt": "lazy lazy dog\n"}


def _master(web_ui: str) -> dict | None:
    from stratus.drivers.spark import master_json

    return master_json(web_ui)


def _groups(workers: int) -> list[dict]:
    return [{"name": "master", "role": "master", "count": 1, "flavor": FLAVOR},
            {"name": "workers", "role": "worker", "count": workers, "flavor": FLAVOR}]


@pytest.fixture(scope="module")
def spark_ns(kube, operator, podrunner, s3_endpoint):
    """A namespace with a BucketClass, a small Flavor and a Bound Bucket."""
    ns = f"t-spark-{uuid.uuid4().hex[:5]}"
    kube.core.create_namespace({"metadata": {"name": ns, "labels": {"stratus.dev/test": "true"}}})
    ensure_bucket_class(kube, s3_endpoint)
    wait_for(lambda: kube.condition(kube.get("bucketclasses", "default")).get("status") == "True", 60, what="BucketClass Ready")
    if kube.get("flavors", FLAVOR) is None:
        kube.create("flavors", {"kind": "Flavor", "metadata": {"name": FLAVOR}, "spec": {"vcpus": 1, "ram": "1Gi"}})
    make_bucket(kube, ns, "data", forceDelete=True)
    yield ns
    for plural in ("datajobschedules", "datajobs", "dataclusters", "buckets"):
        for obj in kube.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", ns, plural)["items"]:
            kube.delete(plural, obj["metadata"]["name"], ns)
    wait_for(lambda: not kube.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", ns, "dataclusters")["items"], 120, what="DataClusters gone")
    kube.core.delete_namespace(ns)


def _cluster(kube, ns) -> dict:
    return kube.get("dataclusters", CLUSTER, ns) or {}


def _active(kube, ns, workers: int):
    c = _cluster(kube, ns)
    st = c.get("status") or {}
    if st.get("phase") != "Active" or st.get("workers") != f"{workers}/{workers}":
        return None
    master = _master(st["webUi"])
    alive = [w for w in (master or {}).get("workers", []) if w["state"] == "ALIVE"]
    return (c, master) if len(alive) == workers else None


def test_api_server_refuses_bad_clusters(kube, crds, namespace):
    bad = [
        ([{"name": "w", "role": "worker", "count": 2, "flavor": FLAVOR}], {}, "exactly one group with role master"),
        ([{"name": "m", "role": "master", "count": 2, "flavor": FLAVOR}], {}, "master group's count must be 1"),
        (_groups(-1), {}, "count"),
        (_groups(1), {"spark.executor.nonsense": "1"}, "unknown Spark setting spark.executor.nonsense"),
    ]
    for groups, config, words in bad:
        body = {"kind": "DataCluster", "metadata": {"name": "bad"},
                "spec": {"version": "4.3.0", "nodeGroups": groups, "config": config}}
        with pytest.raises(ApiException) as exc:
            kube.create("dataclusters", body, namespace)
        assert exc.value.status == 422 and words in exc.value.body, exc.value.body
    with pytest.raises(ApiException) as exc:
        kube.create("dataclusters", {"kind": "DataCluster", "metadata": {"name": "bad"},
                                     "spec": {"version": "2.4.0", "nodeGroups": _groups(1)}}, namespace)
    assert "spec.version" in exc.value.body


def test_cluster_becomes_active_with_both_workers_registered(kube, spark_ns):
    kube.create("dataclusters", {"kind": "DataCluster", "metadata": {"name": CLUSTER},
                                 "spec": {"version": "4.3.0", "daemonMemory": "256Mi", "nodeGroups": _groups(2),
                                          "config": {"spark.worker.cleanup.enabled": "true"}}}, spark_ns)
    cluster, master = wait_for(lambda: _active(kube, spark_ns, 2), SPARK_START, interval=1, what="DataCluster Active with 2 workers")
    st = cluster["status"]
    assert st["masterUrl"].startswith("spark://") and master["url"] == st["masterUrl"]
    assert {g["name"]: (g["ready"], g["desired"]) for g in st["nodeGroups"]} == {"master": (1, 1), "workers": (2, 2)}
    assert kube.condition(cluster)["status"] == "True" and st["observedGeneration"] == cluster["metadata"]["generation"]
    # Each worker the master knows is one of the group's Pods (matched by its local endpoint).
    pods = kube.core.list_namespaced_pod(spark_ns, label_selector="stratus.dev/nodegroup=workers").items
    ports = {json.loads(p.metadata.annotations["stratus.dev/local-ports"])["spark"] for p in pods}
    assert {w["port"] for w in master["workers"] if w["state"] == "ALIVE"} == ports
    assert all(w["cores"] == 1 and w["memory"] == 768 for w in master["workers"])  # 1 vCPU, 1Gi - 256Mi daemon


def _job(kube, ns, name, program, **spec):
    kube.create("datajobs", {"kind": "DataJob", "metadata": {"name": name},
                             "spec": {"clusterName": CLUSTER, "application": {"inline": program}, **spec}}, ns)


def _final(kube, ns, name):
    job = kube.get("datajobs", name, ns) or {}
    return job if (job.get("status") or {}).get("phase") in ("SUCCEEDED", "FAILED", "KILLED") else None


def test_word_count_reads_and_writes_the_bucket_over_s3a(kube, spark_ns, s3_client):
    client, config = workload_client(kube, s3_client, spark_ns, "data")
    bucket = config["BUCKET_NAME"]
    for key, text in TEXTS.items():
        client.put_object(Bucket=bucket, Key=key, Body=text.encode())
    _job(kube, spark_ns, "wordcount", WORDCOUNT, args=["{words}", "{counts}"],
         inputs=[{"name": "words", "bucket": "data", "path": "in/"}],
         outputs=[{"name": "counts", "bucket": "data", "path": "out/"}],
         executor={"instances": 1, "cores": 1, "memory": "512Mi"})
    job = wait_for(lambda: _final(kube, spark_ns, "wordcount"), 600, interval=1, what="the word count to end")
    st = job["status"]
    assert st["phase"] == "SUCCEEDED", st
    assert st["applicationId"].startswith("app-") and st["attempt"] == 1
    assert st["startTime"] and st["completionTime"]
    expected: dict[str, int] = {}
    for text in TEXTS.values():
        for w in text.split():
            expected[w] = expected.get(w, 0) + 1
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="out/").get("Contents", [])]
    assert "out/_SUCCESS" in keys
    got = {}
    for key in keys:
        for line in client.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines():
            word, n = line.split("\t")
            got[word] = int(n)
    assert got == expected
    # The bucket's secret key is nowhere in the job's status nor its driver Pod's spec.
    secret = kube.core.read_namespaced_secret("data", spark_ns).data["AWS_SECRET_ACCESS_KEY"]
    import base64
    plain = base64.b64decode(secret).decode()
    pod = kube.core.read_namespaced_pod(st["driverPod"], spark_ns)
    assert plain not in json.dumps(job) and plain not in json.dumps(kube.api.sanitize_for_serialization(pod))
    # The master knows the application by the job's deterministic name.
    master = _master(_cluster(kube, spark_ns)["status"]["webUi"])
    assert [a["id"] for a in master["completedapps"] if a["name"] == f"{spark_ns}.wordcount.1"] == [st["applicationId"]]


def test_program_from_a_bucket_waits_until_it_exists(kube, spark_ns, s3_client):
    client, config = workload_client(kube, s3_client, spark_ns, "data")
    kube.create("datajobs", {"kind": "DataJob", "metadata": {"name": "from-bucket"},
                             "spec": {"clusterName": CLUSTER, "application": {"bucket": "data", "key": "jobs/wc.py"},
                                      "args": ["{words}", "{counts}"],
                                      "inputs": [{"name": "words", "bucket": "data", "path": "in/"}],
                                      "outputs": [{"name": "counts", "bucket": "data", "path": "out2/"}]}}, spark_ns)
    job = wait_for(lambda: (lambda j: j if kube.condition(j).get("reason") == "ApplicationNotFound" else None)(
        kube.get("datajobs", "from-bucket", spark_ns) or {}), 60, what="ApplicationNotFound")
    assert job["status"]["phase"] == "PENDING" and "spec.application.key" in kube.condition(job)["message"]
    client.put_object(Bucket=config["BUCKET_NAME"], Key="jobs/wc.py", Body=WORDCOUNT.encode())
    job = wait_for(lambda: _final(kube, spark_ns, "from-bucket"), 600, interval=1, what="the job from the bucket to end")
    assert job["status"]["phase"] == "SUCCEEDED", job["status"]
    out = client.get_object(Bucket=config["BUCKET_NAME"], Key="out2/part-00000")["Body"].read().decode()
    assert "lazy\t3" in out.splitlines()


def test_failing_job_reports_the_exception(kube, spark_ns):
    _job(kube, spark_ns, "failing", FAILING)
    job = wait_for(lambda: _final(kube, spark_ns, "failing"), 600, interval=1, what="the failing job to end")
    st = job["status"]
    assert st["phase"] == "FAILED", st
    assert "ValueError: no usable rows among 10: the input table is empty" in st["reason"]
    assert "ValueError" in st["driverLogTail"]
    assert kube.condition(job)["reason"] == "ApplicationFailed"


def test_operator_restart_mid_job_neither_loses_nor_resubmits(kube, spark_ns, operator):
    _job(kube, spark_ns, "slow", SLOW)
    wait_for(lambda: (kube.get("datajobs", "slow", spark_ns) or {}).get("status", {}).get("applicationId"), 420, interval=1,
             what="the slow job to run")
    operator.kill()
    operator.start()
    job = wait_for(lambda: _final(kube, spark_ns, "slow"), 600, interval=1, what="the slow job to end after the restart")
    assert job["status"]["phase"] == "SUCCEEDED" and job["status"]["attempt"] == 1
    pods = kube.core.list_namespaced_pod(spark_ns, label_selector="stratus.dev/datajob=slow").items
    assert [p.metadata.name for p in pods] == ["slow-driver-1"]
    master = _master(_cluster(kube, spark_ns)["status"]["webUi"])
    apps = [a for a in master["activeapps"] + master["completedapps"] if a["name"].startswith(f"{spark_ns}.slow.")]
    assert len(apps) == 1


def test_scheduled_job_runs_on_time_and_keeps_its_history_limit(kube, spark_ns):
    import datetime

    kube.create("datajobschedules", {"kind": "DataJobSchedule", "metadata": {"name": "tick"}, "spec": {
        "schedule": "* * * * *", "successfulRunsHistoryLimit": 1,
        "template": {"clusterName": CLUSTER, "application": {"inline": "print('tick')\n"}}}}, spark_ns)

    def runs():
        return kube.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", spark_ns, "datajobs",
                                                         label_selector="stratus.dev/datajobschedule=tick")["items"]

    first = wait_for(lambda: next(iter(runs()), None), 120, interval=1, what="the first scheduled run")
    scheduled = datetime.datetime.fromisoformat(first["metadata"]["annotations"]["stratus.dev/scheduled-time"].replace("Z", "+00:00"))
    created = datetime.datetime.fromisoformat(first["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    assert scheduled.second == 0 and 0 <= (created - scheduled).total_seconds() < 15  # on time
    wait_for(lambda: _final(kube, spark_ns, first["metadata"]["name"]), 600, interval=1, what="the first run to end")
    # A later run succeeds and, with a history limit of 1, the first one is deleted.
    def rotated():
        items = runs()
        done = [r for r in items if (r.get("status") or {}).get("phase") == "SUCCEEDED"]
        return items if done and first["metadata"]["name"] not in {r["metadata"]["name"] for r in items} else None
    items = wait_for(rotated, 600, interval=2, what="a second run to succeed and the first to be deleted")
    assert sum(1 for r in items if (r.get("status") or {}).get("phase") == "SUCCEEDED") == 1
    sched = kube.get("datajobschedules", "tick", spark_ns)
    assert sched["status"]["phase"] == "Scheduled" and sched["status"]["nextScheduleTime"]
    kube.patch("datajobschedules", "tick", {"spec": {"suspend": True}}, spark_ns)
    wait_for(lambda: kube.get("datajobschedules", "tick", spark_ns)["status"]["phase"] == "Suspended", 60, what="Suspended")


def _scale(kube, ns, workers: int) -> None:
    kube.patch("dataclusters", CLUSTER, {"spec": {"nodeGroups": _groups(workers)}}, ns)


def test_scaling_workers_2_3_1(kube, spark_ns):
    _scale(kube, spark_ns, 3)
    wait_for(lambda: _active(kube, spark_ns, 3), SPARK_START, interval=1, what="3 workers registered")
    pods = kube.core.list_namespaced_pod(spark_ns, label_selector="stratus.dev/nodegroup=workers").items
    pids = {p.metadata.name: int(p.metadata.annotations["stratus.dev/local-pid"]) for p in pods}
    _scale(kube, spark_ns, 1)
    wait_for(lambda: _active(kube, spark_ns, 1), SPARK_START, interval=1, what="1 worker left")
    names = [p.metadata.name for p in kube.core.list_namespaced_pod(spark_ns, label_selector="stratus.dev/nodegroup=workers").items]
    assert names == [f"{CLUSTER}-workers-0"]
    wait_for(lambda: not any(pid_alive(pids[n]) for n in (f"{CLUSTER}-workers-1", f"{CLUSTER}-workers-2")), 60,
             what="the removed workers' processes to stop")
    assert pid_alive(pids[f"{CLUSTER}-workers-0"])


def test_deleting_the_cluster_stops_every_process(kube, spark_ns):
    web = _cluster(kube, spark_ns)["status"]["webUi"]
    pods = kube.core.list_namespaced_pod(spark_ns, label_selector=f"stratus.dev/datacluster={CLUSTER},stratus.dev/nodegroup").items
    pids = [int(p.metadata.annotations["stratus.dev/local-pid"]) for p in pods]
    assert len(pids) >= 2 and all(pid_alive(p) for p in pids)
    kube.delete("dataclusters", CLUSTER, spark_ns)
    wait_for(lambda: kube.get("dataclusters", CLUSTER, spark_ns) is None, 120, what="the DataCluster to go")
    assert not kube.core.list_namespaced_pod(spark_ns, label_selector=f"stratus.dev/datacluster={CLUSTER},stratus.dev/nodegroup").items
    wait_for(lambda: not any(pid_alive(p) for p in pids), 60, what="every Spark process to stop")
    assert _master(web) is None
