"""The instance manager's engine command lines: Bucket credentials never reach the engine's
settings, restore settings only while a restore is pending, MariaDB's root password only in
the private init file."""

from __future__ import annotations

import pytest

from stratus.instance import mariadb, postgresql

BUCKET = {"ENDPOINT": "http://127.0.0.1:9000", "REGION": "us-east-1", "ACCESS_KEY_ID": "AKID",
          "SECRET_ACCESS_KEY": "very-secret", "DESTINATION": "s3://bkt/stratus-databases", "SERVER": "ns.db.1234abcd"}


@pytest.fixture
def env(monkeypatch):
    for k, v in BUCKET.items():
        monkeypatch.setenv(f"STRATUS_ARCHIVE_{k}", v)
    monkeypatch.setenv("STRATUS_SUPERUSER_PASSWORD", "su-pw'x")
    monkeypatch.setenv("STRATUS_REPLICATION_PASSWORD", "repl-pw")
    monkeypatch.setenv("STRATUS_PORT_POSTGRESQL", "25999")
    monkeypatch.setenv("STRATUS_LISTEN_HOST", "127.0.0.1")


def test_postgresql_archives_through_a_profile_not_inline_credentials(env, tmp_path):
    pg = postgresql.PostgreSQL(str(tmp_path), 5432, 8000, "15", {"work_mem": "8MB"}, None)
    args = pg.server_args()
    joined = " ".join(args)
    assert "-p 25999" in joined and "listen_addresses=127.0.0.1" in joined and "work_mem=8MB" in joined
    archive = next(a for a in args if a.startswith("archive_command="))
    assert "--profile archive" in archive and "s3://bkt/stratus-databases ns.db.1234abcd %p" in archive
    assert "very-secret" not in joined and "AKID" not in joined and "su-pw" not in joined
    assert "restore_command" not in joined  # no restore pending
    creds = (pg.rundir / "aws-credentials").read_text()
    assert "[archive]" in creds and "very-secret" in creds
    assert (pg.rundir / "aws-credentials").stat().st_mode & 0o077 == 0
    assert not any(k.startswith(("STRATUS_ARCHIVE_", "STRATUS_SUPERUSER")) for k in pg.env())


def test_mariadb_root_password_only_in_the_private_init_file(env, tmp_path, monkeypatch):
    monkeypatch.setenv("STRATUS_PORT_MYSQL", "23999")
    db = mariadb.MariaDB(str(tmp_path), 3306, 8000, "10.11", {"max_connections": "77"})
    args = db.server_args()
    assert "--port=23999" in args and "--max-connections=77" in args
    assert not any("su-pw" in a for a in args)
    init = next(a for a in args if a.startswith("--init-file=")).split("=", 1)[1]
    text = open(init).read()
    assert "IDENTIFIED BY 'su-pw\\'x'" in text  # quoted
    assert (db.rundir / "init.sql").stat().st_mode & 0o077 == 0
