"""Databases (Trove) against real engines: PostgreSQL 15 and MariaDB run as local processes
standing for the Database's Pods (the pod runner), the operator runs for real, backups go
to the real S3 server. Nothing here talks to a fake."""

from __future__ import annotations

import base64
import datetime
import json
import os
import signal
import time
import uuid

import pymysql
import psycopg
import pytest
from kubernetes.client.rest import ApiException

from .kube import pid_alive, wait_for
from .test_buckets import bucket_class, make_bucket  # noqa: F401  (fixture)

os.environ.setdefault("STRATUS_DATABASE_INTERVAL", "2")


def vtype(kube) -> str:
    name = f"dbvt-{uuid.uuid4().hex[:6]}"
    kube.create("volumetypes", {"kind": "VolumeType", "metadata": {"name": name},
                                "spec": {"storageClassName": "standin-csi", "allowExpansion": True, "volumeMode": "Filesystem"}})
    return name


def create_db(kube, namespace, name, engine, **spec) -> dict:
    body = {"kind": "Database", "metadata": {"name": name},
            "spec": {"engine": engine, "storage": {"size": "1Gi", "volumeType": spec.pop("volumeType")}, **spec}}
    return kube.create("databases", body, namespace)


def active(kube, namespace, name):
    db = kube.get("databases", name, namespace)
    st = (db or {}).get("status") or {}
    if st.get("phase") == "ERROR":
        raise AssertionError(f"Database {name} is ERROR: {kube.condition(db)}")
    return db if st.get("phase") == "ACTIVE" and st.get("observedGeneration") == db["metadata"]["generation"] else None


def wait_active(kube, namespace, name, timeout=120) -> dict:
    return wait_for(lambda: active(kube, namespace, name), timeout, interval=0.5, what=f"Database {name} ACTIVE")


def secret(kube, namespace, name) -> dict[str, str]:
    data = kube.core.read_namespaced_secret(name, namespace).data
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def connect(engine: str, s: dict, database: str | None = None, user: str | None = None, password: str | None = None):
    user, password = user or s["user"], password or s["password"]
    if engine == "postgresql":
        return psycopg.connect(host=s["host"], port=int(s["port"]), user=user, password=password,
                               dbname=database or "postgres", autocommit=True, connect_timeout=5)
    return pymysql.connect(host=s["host"], port=int(s["port"]), user=user, password=password, database=database,
                           autocommit=True, connect_timeout=5)


def execute(conn, sql: str, params=()) -> list:
    if isinstance(conn, psycopg.Connection):
        cur = conn.execute(sql, params or None)
        return cur.fetchall() if cur.description else []
    with conn.cursor() as cur:
        cur.execute(sql.replace("%s", "%s"), params or None)
        return list(cur.fetchall()) if cur.description else []


def local_pid(kube, namespace, pod) -> int:
    p = kube.core.read_namespaced_pod(pod, namespace)
    return int(p.metadata.annotations["stratus.dev/local-pid"])


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, field", [
    ({"engine": "oracle", "storage": {"size": "1Gi"}}, "spec.engine"),
    ({"engine": "postgresql", "version": "9.6", "storage": {"size": "1Gi"}}, "spec.version"),
    ({"engine": "mariadb", "version": "15", "storage": {"size": "1Gi"}}, "spec.version"),
    ({"engine": "postgresql", "instances": 0, "storage": {"size": "1Gi"}}, "spec.instances"),
    ({"engine": "postgresql", "storage": {"size": "1Gi"}, "parameters": [{"name": "work_mem", "value": "8MB"}, {"name": "no_such_knob", "value": "1"}]}, "no_such_knob"),
    ({"engine": "postgresql", "storage": {"size": "1Gi"}, "parameters": [{"name": "archive_command", "value": "true"}]}, "archive_command"),
    ({"engine": "mariadb", "storage": {"size": "1Gi"}, "parameters": [{"name": "shared_buffers", "value": "1GB"}]}, "not settable on mariadb"),
    ({"engine": "postgresql", "storage": {"size": "1Gi"}, "restore": {"backup": "b", "database": "d"}}, "spec.restore"),
    ({"engine": "postgresql", "storage": {"size": "1Gi"}, "users": [{"name": "Bad-Name"}]}, "spec.users[0].name"),
    ({"engine": "mariadb", "instances": 3, "storage": {"size": "1Gi"}}, "spec.instances"),
])
def test_api_server_refuses_bad_databases(kube, crds, namespace, spec, field):
    with pytest.raises(ApiException) as exc:
        kube.create("databases", {"kind": "Database", "metadata": {"name": "bad"}, "spec": spec}, namespace)
    assert exc.value.status == 422 and field in exc.value.body, exc.value.body


def test_storage_cannot_shrink_and_engine_cannot_change(kube, crds, namespace):
    kube.create("databases", {"kind": "Database", "metadata": {"name": "grow"},
                              "spec": {"engine": "postgresql", "storage": {"size": "2Gi"}}}, namespace)
    for patch, field in [({"spec": {"storage": {"size": "1Gi"}}}, "spec.storage.size cannot shrink"),
                         ({"spec": {"engine": "mariadb"}}, "spec.engine cannot be changed")]:
        with pytest.raises(ApiException) as exc:
            kube.patch("databases", "grow", patch, namespace)
        assert exc.value.status == 422 and field in exc.value.body, exc.value.body


# -- one instance, both engines -----------------------------------------------------------------


@pytest.mark.parametrize("engine", ["postgresql", "mariadb"])
def test_single_instance_users_databases_and_deletion(kube, operator, podrunner, namespace, engine):
    vt = vtype(kube)
    kube.core.create_namespaced_secret(namespace, {"metadata": {"name": "reporter-pw"}, "stringData": {"pw": "chosen-by-user-1"}})
    create_db(kube, namespace, "shop", engine, volumeType=vt,
              databases=[{"name": "orders"}, {"name": "billing"}],
              users=[{"name": "app", "grants": [{"database": "orders"}]},
                     {"name": "reporter", "passwordSecret": {"name": "reporter-pw", "key": "pw"},
                      "grants": [{"database": "orders", "privileges": "ReadOnly"}]}],
              parameters=[{"name": "max_connections", "value": "60"}])
    db = wait_active(kube, namespace, "shop")
    st = db["status"]
    assert st["primary"] == "shop-1" and st["engineVersion"].startswith("15" if engine == "postgresql" else "10.11")
    assert kube.condition(db)["status"] == "True"
    assert kube.condition(db, "ReplicationHealthy")["status"] == "True"
    assert kube.core.read_namespaced_service("shop", namespace).spec.selector["stratus.dev/role"] == "primary"

    admin = secret(kube, namespace, "shop")
    assert admin["uri"].startswith("postgresql://" if engine == "postgresql" else "mysql://")
    with connect(engine, admin) as c:
        assert int(execute(c, "SELECT @@max_connections" if engine == "mariadb" else "SHOW max_connections")[0][0]) == 60

    app = secret(kube, namespace, "shop-user-app")
    assert app["user"] == "app" and app["database"] == "orders"
    with connect(engine, app, "orders") as c:
        execute(c, "CREATE TABLE items (id int primary key, name varchar(20))")
        execute(c, "INSERT INTO items VALUES (1, 'one'), (2, 'two')")
    # app may not use billing; reporter reads orders but cannot write
    with pytest.raises((psycopg.OperationalError, pymysql.err.OperationalError)):
        connect(engine, app, "billing").close()
    with connect(engine, admin, user="reporter", password="chosen-by-user-1", database="orders") as c:
        assert sorted(r[0] for r in execute(c, "SELECT id FROM items")) == [1, 2]
        with pytest.raises((psycopg.errors.InsufficientPrivilege, pymysql.err.OperationalError)):
            execute(c, "INSERT INTO items VALUES (3, 'three')")

    pid = local_pid(kube, namespace, "shop-1")
    assert pid_alive(pid)
    kube.delete("databases", "shop", namespace)
    # foreground deletion through the garbage collector: under load it took up to ~60 s here
    wait_for(lambda: kube.get("databases", "shop", namespace) is None, 150, what="Database gone")
    wait_for(lambda: not pid_alive(pid), 60, what="the engine process to stop")
    wait_for(lambda: not kube.core.list_namespaced_persistent_volume_claim(namespace, label_selector="stratus.dev/database=shop").items,
             90, what="PVCs gone")
    wait_for(lambda: not [s for s in kube.core.list_namespaced_secret(namespace).items if s.metadata.name.startswith("shop")],
             60, what="Secrets gone")
    assert kube.core.read_namespaced_secret("reporter-pw", namespace)  # the user's own Secret stays


# -- backups and point-in-time recovery ----------------------------------------------------------


def _backup(kube, namespace, name, database) -> dict:
    kube.create("databasebackups", {"kind": "DatabaseBackup", "metadata": {"name": name}, "spec": {"database": database}}, namespace)

    def done():
        b = kube.get("databasebackups", name, namespace)
        phase = ((b or {}).get("status") or {}).get("phase")
        if phase == "Failed":
            raise AssertionError(f"backup failed: {kube.condition(b)}")
        return b if phase == "Completed" else None

    return wait_for(done, 180, interval=1, what=f"DatabaseBackup {name} Completed")


def test_postgresql_backup_and_point_in_time_restore(kube, operator, podrunner, bucket_class, namespace):  # noqa: F811
    vt = vtype(kube)
    make_bucket(kube, namespace, "backups")
    create_db(kube, namespace, "src", "postgresql", volumeType=vt, databases=[{"name": "app"}], backup={"bucket": "backups"})
    wait_active(kube, namespace, "src")
    admin = secret(kube, namespace, "src")
    with connect("postgresql", admin, "app") as c:
        execute(c, "CREATE TABLE t (id int primary key, at timestamptz default now())")
        execute(c, "INSERT INTO t (id) SELECT generate_series(1, 100)")

    b = _backup(kube, namespace, "src-1", "src")["status"]
    assert b["sizeBytes"] > 0 and len(b["checksum"]) == 64 and b["engineVersion"].startswith("15")
    assert b["bucket"] == "backups" and b["durationSeconds"] is not None and b["beginTime"] <= b["endTime"]

    with connect("postgresql", admin, "app") as c:
        execute(c, "INSERT INTO t (id) SELECT generate_series(101, 150)")
    time.sleep(1.5)  # the target lies strictly between the two writes, at whole-second precision
    target = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    time.sleep(1.5)
    with connect("postgresql", admin, "app") as c:
        execute(c, "INSERT INTO t (id) SELECT generate_series(151, 175)")
        committed_before = execute(c, "SELECT count(*) FROM t WHERE at <= %s", (target,))[0][0]
    assert committed_before == 150

    # outside the window: refused with the window in the message
    create_db(kube, namespace, "too-early", "postgresql", volumeType=vt,
              restore={"database": "src", "targetTime": "2020-01-01T00:00:00Z"})

    def refused():
        db = kube.get("databases", "too-early", namespace)
        cond = kube.condition(db)
        return cond if cond.get("reason") == "TargetOutsideWindow" else None

    cond = wait_for(refused, 90, what="restore outside the window refused")
    assert "recoverable window" in cond["message"] and "spec.restore.targetTime" in cond["message"]

    create_db(kube, namespace, "pitr", "postgresql", volumeType=vt,
              restore={"database": "src", "targetTime": target.isoformat().replace("+00:00", "Z")})
    db = wait_active(kube, namespace, "pitr", timeout=240)
    assert db["status"]["restoredFrom"].startswith("Database src at ")
    restored = secret(kube, namespace, "pitr")
    assert restored["password"] != admin["password"]
    with connect("postgresql", restored, "app") as c:
        ids = [r[0] for r in execute(c, "SELECT id FROM t ORDER BY id")]
    assert ids == list(range(1, 151))

    src = kube.get("databases", "src", namespace)
    window = src["status"]["recoverableWindow"]
    assert window["earliest"] == b["endTime"] and window["latest"] >= target.isoformat().replace("+00:00", "Z")
    assert src["status"]["lastBackup"] == "src-1"

    # deleting the Database keeps its backups
    kube.delete("databases", "src", namespace)
    wait_for(lambda: kube.get("databases", "src", namespace) is None, 60, what="Database gone")
    assert kube.get("databasebackups", "src-1", namespace)["status"]["phase"] == "Completed"


def test_mariadb_backup_and_restore(kube, operator, podrunner, bucket_class, namespace):  # noqa: F811
    vt = vtype(kube)
    make_bucket(kube, namespace, "backups")
    create_db(kube, namespace, "msrc", "mariadb", volumeType=vt, databases=[{"name": "app"}], backup={"bucket": "backups"})
    wait_active(kube, namespace, "msrc")
    admin = secret(kube, namespace, "msrc")
    with connect("mariadb", admin, "app") as c:
        execute(c, "CREATE TABLE t (id int primary key)")
        execute(c, "INSERT INTO t VALUES " + ",".join(f"({i})" for i in range(1, 51)))
    b = _backup(kube, namespace, "msrc-1", "msrc")["status"]
    assert b["sizeBytes"] > 0 and len(b["checksum"]) == 64 and b["engineVersion"].startswith("10.11")
    with connect("mariadb", admin, "app") as c:
        execute(c, "INSERT INTO t VALUES (51)")

    create_db(kube, namespace, "mcopy", "mariadb", volumeType=vt, restore={"backup": "msrc-1"})
    wait_active(kube, namespace, "mcopy", timeout=180)
    with connect("mariadb", secret(kube, namespace, "mcopy"), "app") as c:
        assert [r[0] for r in execute(c, "SELECT id FROM t ORDER BY id")] == list(range(1, 51))


# -- replicas and failover ------------------------------------------------------------------------


def test_postgresql_replicas_and_failover(kube, operator, podrunner, namespace):
    vt = vtype(kube)
    create_db(kube, namespace, "ha", "postgresql", volumeType=vt, instances=3, databases=[{"name": "app"}])

    def healthy():
        db = active(kube, namespace, "ha")
        return db if db and kube.condition(db, "ReplicationHealthy").get("status") == "True" else None

    db = wait_for(healthy, 240, interval=1, what="3 instances streaming")
    old_primary = db["status"]["primary"]
    assert sorted(i["role"] for i in db["status"]["instances"]) == ["primary", "replica", "replica"]
    s = secret(kube, namespace, "ha")
    with connect("postgresql", s, "app") as c:
        execute(c, "CREATE TABLE t (id int primary key)")
        execute(c, "INSERT INTO t SELECT generate_series(1, 20)")
        # wait until both replicas have replayed it (asynchronous streaming)
        wait_for(lambda: execute(c, "SELECT count(*) FROM pg_stat_replication WHERE replay_lsn = pg_current_wal_lsn()")[0][0] == 2,
                 30, what="replicas caught up")

    os.killpg(local_pid(kube, namespace, old_primary), signal.SIGKILL)  # the primary's container dies

    def failed_over():
        d = kube.get("databases", "ha", namespace)
        st = d.get("status") or {}
        return d if st.get("primary") not in ("", old_primary) and st.get("phase") == "ACTIVE" else None

    d = wait_for(failed_over, 120, interval=0.5, what="a replica promoted")
    assert kube.core.list_namespaced_pod(namespace, label_selector="stratus.dev/database=ha,stratus.dev/role=primary").items[0].metadata.name == d["status"]["primary"]

    def writable():
        s2 = secret(kube, namespace, "ha")
        try:
            with connect("postgresql", s2, "app") as c:
                execute(c, "INSERT INTO t VALUES (21)")
                return [r[0] for r in execute(c, "SELECT id FROM t ORDER BY id")]
        except psycopg.Error:
            return None

    assert wait_for(writable, 60, interval=0.5, what="writes through the Secret after failover") == list(range(1, 22))
    wait_for(healthy, 240, interval=1, what="3 instances streaming again")
    assert json.dumps(kube.get("databases", "ha", namespace)["status"]).find(s["password"]) == -1


def test_scheduled_backups_keep_only_retention(kube, operator, podrunner, bucket_class, namespace, s3_client):  # noqa: F811
    vt = vtype(kube)
    make_bucket(kube, namespace, "backups")
    create_db(kube, namespace, "nightly", "mariadb", volumeType=vt, databases=[{"name": "app"}],
              backup={"bucket": "backups", "schedule": "* * * * * */15", "retention": 2})
    wait_active(kube, namespace, "nightly")
    seen: set[str] = set()

    def scheduled():
        items = kube.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", namespace, "databasebackups",
                                                          label_selector="stratus.dev/database=nightly,stratus.dev/scheduled=true")["items"]
        seen.update(b["metadata"]["name"] for b in items)
        done = [b for b in items if (b.get("status") or {}).get("phase") == "Completed" and not b["metadata"].get("deletionTimestamp")]
        return done if len(seen) >= 4 and len(done) == 2 else None

    done = wait_for(scheduled, 180, interval=1, what="four scheduled backups taken, two kept")
    # the pruned ones' data is gone from the Bucket too; the kept ones' is there
    secret_ = secret(kube, namespace, "backups")
    client = s3_client(secret_["AWS_ACCESS_KEY_ID"], secret_["AWS_SECRET_ACCESS_KEY"])
    bucket = kube.get("buckets", "backups", namespace)["status"]["bucketName"]

    def stored():
        keys = {o["Key"].rsplit("/", 1)[1].removesuffix(".xbstream")
                for o in client.list_objects_v2(Bucket=bucket, Prefix="stratus-databases/").get("Contents", [])}
        live = {b["metadata"]["name"] for b in kube.custom.list_namespaced_custom_object(
            "stratus.dev", "v1alpha1", namespace, "databasebackups", label_selector="stratus.dev/database=nightly")["items"]}
        kept = {b["status"]["backupId"] for b in done}
        return keys if kept <= keys and all(any(k.startswith(n) for n in live) for k in keys) else None

    wait_for(stored, 60, what="only kept backups' data in the Bucket")
    kube.patch("databases", "nightly", {"spec": {"backup": {"schedule": None, "retention": None}}}, namespace)  # stop the schedule
