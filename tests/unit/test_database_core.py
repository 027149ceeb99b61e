"""Databases: the pure parts (catalog, parameter rules, children, window math, phase)."""

from __future__ import annotations

import pytest

from stratus.api.database import Database, sample
from stratus.core import database as core


def _db(**spec) -> dict:
    body = sample("orders", **spec)
    body["metadata"].update(namespace="shop", uid="0123456789abcdef")
    return body


@pytest.mark.parametrize("engine, params, expected", [
    ("postgresql", {"work_mem": "8MB", "max_connections": "50"}, []),
    ("postgresql", {"no_such_thing": "1"}, ["spec.parameters.no_such_thing is not a settable postgresql parameter"]),
    ("postgresql", {"archive_command": "/bin/true"}, ["spec.parameters.archive_command is managed by Stratus"]),
    ("mariadb", {"max_connections": "77"}, []),
    ("mariadb", {"work_mem": "8MB"}, ["spec.parameters.work_mem is not a settable mariadb parameter"]),
    ("mariadb", {"datadir": "/x"}, ["spec.parameters.datadir is managed by Stratus"]),
])
def test_parameter_problems_name_the_field(engine, params, expected):
    problems = core.parameter_problems(engine, params)
    assert len(problems) == len(expected)
    for got, want in zip(problems, expected):
        assert got.startswith(want)


def test_grants_must_name_declared_databases():
    spec = _db(users=[{"name": "ro", "grants": [{"database": "missing"}]}])["spec"]
    assert core.grant_problems(spec) == [
        "spec.users[0].grants names database 'missing', which is not in spec.databases; add it there"]
    assert core.grant_problems(_db()["spec"]) == []


def test_catalog_lists_every_engine_with_a_default():
    cat = {e["engine"]: e for e in core.engine_catalog()}
    assert set(cat) == {"postgresql", "mariadb"}
    for e in cat.values():
        assert e["defaultVersion"] in e["versions"]


def test_primary_pod_runs_the_instance_manager_on_its_claim():
    db = _db(parameters=[{"name": "work_mem", "value": "8MB"}])
    archive = core.BackupTarget("backups", "bkt-123", core.server_name(db))
    pod = core.instance_pod(db, 1, "primary", cpu="2", memory="4Gi", archive=archive)
    c = pod["spec"]["containers"][0]
    assert pod["metadata"]["name"] == "orders-1"
    assert pod["metadata"]["labels"][core.ROLE_LABEL] == "primary"
    assert pod["metadata"]["labels"][core.ENGINE_LABEL] == "postgresql"
    assert pod["spec"]["restartPolicy"] == "Never"  # the operator restarts or fails over
    assert c["command"] == ["stratus"] and c["args"][:2] == ["instance", "postgresql"]
    assert "work_mem=8MB" in c["args"]
    assert {p["name"] for p in c["ports"]} == {"postgresql", "control"}
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "orders-1"
    env = {e["name"]: e for e in c["env"]}
    assert env["STRATUS_SUPERUSER_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "orders-superuser"
    assert env["STRATUS_ARCHIVE_DESTINATION"]["value"] == "s3://bkt-123/stratus-databases"
    assert env["STRATUS_ARCHIVE_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "backups", "key": "AWS_ACCESS_KEY_ID"}
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    # no secret value is ever inlined in the pod
    assert all("value" not in e or "PASSWORD" not in e["name"] for e in c["env"])


def test_replica_clones_from_the_primary_and_restore_only_on_the_primary():
    db = _db()
    source = core.RestoreSource(core.BackupTarget("b", "bkt", "src"), "20261203T100000", "2026-12-03T10:05:00Z")
    replica = core.instance_pod(db, 2, "replica", cpu=None, memory=None, archive=None, restore=source, primary=("10.0.0.5", 5432))
    args = replica["spec"]["containers"][0]["args"]
    assert args[args.index("--primary") + 1] == "10.0.0.5:5432"
    assert not any(e["name"].startswith("STRATUS_RESTORE") for e in replica["spec"]["containers"][0]["env"])
    primary = core.instance_pod(db, 1, "primary", cpu=None, memory=None, archive=None, restore=source)
    env = {e["name"]: e.get("value") for e in primary["spec"]["containers"][0]["env"]}
    assert env["STRATUS_RESTORE_BACKUP_ID"] == "20261203T100000"
    assert env["STRATUS_RESTORE_TARGET_TIME"] == "2026-12-03T10:05:00Z"


def test_service_selects_the_primary_and_claim_has_the_size():
    db = _db()
    svc = core.service(db)
    assert svc["spec"]["selector"] == {core.LABEL: "orders", core.ROLE_LABEL: "primary"}
    assert svc["spec"]["ports"][0]["port"] == 5432
    pvc = core.claim(db, 3, "standin-csi")
    assert pvc["metadata"]["name"] == "orders-3"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert pvc["spec"]["storageClassName"] == "standin-csi"
    assert "storageClassName" not in core.claim(db, 1, None)["spec"]


def test_connection_uri_quotes_the_password():
    data = core.connection_data("mariadb", "app", "p@ss/w:rd", "127.0.0.1", 3306, "app")
    assert data["uri"] == "mysql://app:p%40ss%2Fw%3Ard@127.0.0.1:3306/app"
    assert data["port"] == "3306"


B = lambda end, phase="Completed": {"phase": phase, "endTime": end}  # noqa: E731


@pytest.mark.parametrize("name, backups, archived, window", [
    ("no backup, no window", [], "2026-12-03T10:00:00Z", None),
    ("failed backups do not count", [B("2026-12-03T09:00:00Z", "Failed")], None, None),
    ("one backup, nothing archived since", [B("2026-12-03T09:00:00Z")], None, ("2026-12-03T09:00:00Z", "2026-12-03T09:00:00Z")),
    ("WAL archived after the backup", [B("2026-12-03T09:00:00Z"), B("2026-12-03T08:00:00Z")], "2026-12-03T10:00:00+00:00",
     ("2026-12-03T08:00:00Z", "2026-12-03T10:00:00Z")),
])
def test_recoverable_window(name, backups, archived, window):
    assert core.recoverable_window(backups, archived) == window


@pytest.mark.parametrize("target, base_end", [
    ("2026-12-03T08:30:00Z", "2026-12-03T08:00:00Z"),
    ("2026-12-03T09:00:00Z", "2026-12-03T09:00:00Z"),
    ("2026-12-03T09:59:59Z", "2026-12-03T09:00:00Z"),
    ("2026-12-03T07:00:00Z", None),
])
def test_backup_for_target_is_the_newest_before_it(target, base_end):
    backups = [B("2026-12-03T08:00:00Z"), B("2026-12-03T09:00:00Z"), B("2026-12-03T09:30:00Z", "Failed")]
    got = core.backup_for_target(backups, target)
    assert (got or {}).get("endTime") == base_end


@pytest.mark.parametrize("window, target, refused", [
    (None, "2026-12-03T08:30:00Z", "has no completed backup"),
    (("2026-12-03T08:00:00Z", "2026-12-03T10:00:00Z"), "2026-12-03T08:30:00Z", None),
    (("2026-12-03T08:00:00Z", "2026-12-03T10:00:00Z"), "2026-12-03T07:59:59Z", "outside the recoverable window 2026-12-03T08:00:00Z .. 2026-12-03T10:00:00Z"),
    (("2026-12-03T08:00:00Z", "2026-12-03T10:00:00Z"), "2026-12-03T10:00:01Z", "outside the recoverable window"),
])
def test_target_outside_the_window_is_refused_with_the_window(window, target, refused):
    problem = core.target_problem(window, target)
    assert (problem is None) == (refused is None)
    if refused:
        assert refused in problem and problem.startswith("spec.restore.targetTime")


@pytest.mark.parametrize("kw, phase", [
    (dict(invalid=True, primary_ready=True, restoring=False, backing_up=False, failed=False), "ERROR"),
    (dict(invalid=False, primary_ready=False, restoring=False, backing_up=False, failed=False), "BUILD"),
    (dict(invalid=False, primary_ready=False, restoring=True, backing_up=False, failed=False), "RESTORE"),
    (dict(invalid=False, primary_ready=True, restoring=False, backing_up=True, failed=False), "BACKUP"),
    (dict(invalid=False, primary_ready=True, restoring=False, backing_up=False, failed=False), "ACTIVE"),
])
def test_phase(kw, phase):
    assert core.phase(**kw) == phase


def test_sample_parses():
    Database.model_validate(_db())


T = lambda s: core.parse_time(s)  # noqa: E731


@pytest.mark.parametrize("expr, now, since, slot", [
    ("0 3 * * *", "2026-12-03T10:00:00Z", "2026-12-01T00:00:00Z", "2026-12-03T03:00:00Z"),
    ("0 3 * * *", "2026-12-03T03:00:00Z", "2026-12-01T00:00:00Z", "2026-12-03T03:00:00Z"),
    ("0 3 * * *", "2026-12-03T10:00:00Z", "2026-12-03T04:00:00Z", None),   # created after the last slot
    ("* * * * * */10", "2026-12-03T10:00:25Z", "2026-12-03T10:00:00Z", "2026-12-03T10:00:20Z"),
])
def test_due_slot(expr, now, since, slot):
    got = core.due_slot(expr, T(now), T(since))
    assert (core.format_time(got) if got else None) == slot


def test_schedule_problem_names_the_field():
    assert core.schedule_problem("0 3 * * *") is None
    assert core.schedule_problem("every night").startswith("spec.backup.schedule")


def _b(name, phase, end="", created=""):
    return {"metadata": {"name": name, "creationTimestamp": created}, "status": {"phase": phase, "endTime": end}}


@pytest.mark.parametrize("backups, retention, pruned", [
    ([_b("a", "Completed", "1"), _b("b", "Completed", "2"), _b("c", "Completed", "3")], 2, ["a"]),
    ([_b("a", "Completed", "1"), _b("b", "Completed", "2")], 2, []),
    ([_b("a", "Completed", "1"), _b("b", "Running"), _b("c", "Completed", "3")], 1, ["a"]),
    ([_b("f", "Failed", created="0"), _b("a", "Completed", "1"), _b("b", "Completed", "2")], 2, ["f"]),
    ([_b("f", "Failed", created="5"), _b("a", "Completed", "1")], 1, []),   # failed after the newest kept: kept
])
def test_retention_prunes_the_oldest_completed(backups, retention, pruned):
    assert core.backups_to_prune(backups, retention) == pruned
