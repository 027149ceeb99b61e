"""Engine SQL for Databases: declarative databases, users and grants (idempotent), engine
parameters that apply without a restart, replication state, promotion and metrics.
psycopg 3 for PostgreSQL, PyMySQL for MariaDB. Passwords travel only as SQL literals on
sessions that do not log statements; nothing here logs one."""

from __future__ import annotations

import dataclasses
import urllib.request
import json

from ..core.database import Grant, UserPlan

CONNECT_TIMEOUT = 3


@dataclasses.dataclass
class Probe:
    ready: bool
    in_recovery: bool = False
    version: str = ""
    lsn: int | None = None          # PostgreSQL: received (replica) or current (primary) WAL position
    last_archived: str | None = None
    replicas: list[dict] = dataclasses.field(default_factory=list)
    metrics: dict = dataclasses.field(default_factory=dict)
    pending_restart: list[str] = dataclasses.field(default_factory=list)
    error: str = ""


def _lsn(text: str | None) -> int | None:
    if not text:
        return None
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


# -- PostgreSQL -------------------------------------------------------------------------------


def pg_connect(host: str, port: int, password: str, dbname: str = "postgres", user: str = "postgres"):
    import psycopg

    return psycopg.connect(host=host, port=port, user=user, password=password, dbname=dbname,
                           autocommit=True, connect_timeout=CONNECT_TIMEOUT)


def pg_probe(host: str, port: int, password: str) -> Probe:
    try:
        with pg_connect(host, port, password) as c:
            rec = c.execute("SELECT pg_is_in_recovery(), current_setting('server_version')").fetchone()
            p = Probe(True, rec[0], rec[1])
            if p.in_recovery:
                p.lsn = _lsn(c.execute("SELECT pg_last_wal_receive_lsn()::text").fetchone()[0]) or \
                    _lsn(c.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0])
            else:
                p.lsn = _lsn(c.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
                row = c.execute("SELECT last_archived_time FROM pg_stat_archiver").fetchone()
                if row and row[0]:
                    p.last_archived = row[0].astimezone().isoformat()
                p.replicas = [{"name": r[0], "state": r[1], "lagBytes": int(r[2] or 0)} for r in c.execute(
                    "SELECT application_name, state, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) FROM pg_stat_replication")]
            m = c.execute("SELECT (SELECT count(*) FROM pg_stat_activity), "
                          "(SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database), "
                          "(SELECT sum(pg_database_size(datname)) FROM pg_database)").fetchone()
            p.metrics = {"connections": int(m[0] or 0), "transactions": int(m[1] or 0), "size_bytes": int(m[2] or 0)}
            p.pending_restart = [r[0] for r in c.execute("SELECT name FROM pg_settings WHERE pending_restart")]
            return p
    except Exception as exc:  # noqa: BLE001 - unreachable is an observation, not an error
        return Probe(False, error=type(exc).__name__)


def pg_ensure(host: str, port: int, password: str, databases: list[str], users: list[UserPlan],
              passwords: dict[str, str], parameters: dict[str, str]) -> None:
    """Create what is missing, fix what differs; never drops (removing a user from the spec
    revokes nothing yet: said in the README)."""
    from psycopg import sql

    with pg_connect(host, port, password) as c:
        c.execute("SET log_statement = 'none'")
        for name, value in sorted(parameters.items()):
            current = c.execute("SELECT setting, context FROM pg_settings WHERE name = %s", (name,)).fetchone()
            if current and current[1] in ("postmaster",):
                continue  # passed on the command line at start; a change needs a restart
            c.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        if parameters:
            c.execute("SELECT pg_reload_conf()")
        for u in users:
            exists = c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (u.name,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            c.execute(sql.SQL(verb + " ROLE {} WITH LOGIN PASSWORD {}").format(sql.Identifier(u.name), sql.Literal(passwords[u.name])))
        existing = {r[0] for r in c.execute("SELECT datname FROM pg_database")}
        for db in databases:
            if db not in existing:
                c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
            # Only granted users may connect: PUBLIC loses CONNECT and TEMP on every declared database.
            c.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db)))
        for u in users:
            for g in u.grants:
                # tables any writer of the database creates later reach this user too
                creators = ["postgres"] + [w.name for w in users
                                           if any(x.database == g.database and x.privileges == "ReadWrite" for x in w.grants)]
                _pg_grant(c, password, u.name, g, creators)


def _pg_grant(c, password: str, user: str, g: Grant, creators: list[str]) -> None:
    from psycopg import sql

    u, d = sql.Identifier(user), sql.Identifier(g.database)
    c.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(d, u))
    with pg_connect(c.info.host, c.info.port, password, dbname=g.database) as dc:
        if g.privileges == "ReadWrite":
            dc.execute(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(u))
            dc.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}").format(u))
            dc.execute(sql.SQL("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {}").format(u))
            tables, sequences = "ALL", "ALL"
        else:
            dc.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(u))
            dc.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(u))
            tables, sequences = "SELECT", "SELECT"
        for creator in creators:
            if creator == user:
                continue
            r = sql.Identifier(creator)
            dc.execute(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT " + tables + " ON TABLES TO {}").format(r, u))
            dc.execute(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT " + sequences + " ON SEQUENCES TO {}").format(r, u))


def pg_promote(host: str, port: int, password: str) -> None:
    with pg_connect(host, port, password) as c:
        c.execute("SELECT pg_promote(true, 30)")


def pg_follow(host: str, port: int, password: str, primary: tuple[str, int], application_name: str) -> bool:
    """Point a replica at ``primary`` (ALTER SYSTEM + reload; primary_conninfo reloads
    since PostgreSQL 13). True when it changed something."""
    from psycopg import sql

    with pg_connect(host, port, password) as c:
        current = c.execute("SHOW primary_conninfo").fetchone()[0]
        passfile = next((w.split("=", 1)[1] for w in current.split() if w.startswith("passfile=")), "")
        want = (f"host={primary[0]} port={primary[1]} user=streaming_replica application_name={application_name}"
                + (f" passfile={passfile}" if passfile else ""))
        if f"host={primary[0]} " in current and f"port={primary[1]} " in current:
            return False
        c.execute(sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(sql.Literal(want)))
        c.execute("SELECT pg_reload_conf()")
        return True


def pg_switch_wal(host: str, port: int, password: str) -> str:
    """Commit a transaction now (txid_current assigns an xid, so its commit is logged), then
    close the WAL segment. The name returned is the segment that must be archived."""
    with pg_connect(host, port, password) as c:
        c.execute("SELECT txid_current()")
        return c.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]


def pg_archived_wal(host: str, port: int, password: str) -> str | None:
    with pg_connect(host, port, password) as c:
        row = c.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
        return row[0] if row else None


# -- MariaDB ----------------------------------------------------------------------------------


def my_connect(host: str, port: int, password: str, user: str = "root", database: str | None = None):
    import pymysql

    return pymysql.connect(host=host, port=port, user=user, password=password, database=database,
                           autocommit=True, connect_timeout=CONNECT_TIMEOUT)


def my_probe(host: str, port: int, password: str) -> Probe:
    try:
        with my_connect(host, port, password) as c, c.cursor() as cur:
            cur.execute("SELECT VERSION()")
            version = cur.fetchone()[0]
            cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN ('Threads_connected', 'Com_commit', 'Com_rollback')")
            st = {k: int(v) for k, v in cur.fetchall()}
            cur.execute("SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables")
            size = int(cur.fetchone()[0])
            return Probe(True, False, version.split("-")[0],
                         metrics={"connections": st.get("Threads_connected", 0),
                                  "transactions": st.get("Com_commit", 0) + st.get("Com_rollback", 0), "size_bytes": size})
    except Exception as exc:  # noqa: BLE001
        return Probe(False, error=type(exc).__name__)


def my_ensure(host: str, port: int, password: str, databases: list[str], users: list[UserPlan],
              passwords: dict[str, str], parameters: dict[str, str], restart_only: set[str]) -> None:
    with my_connect(host, port, password) as c, c.cursor() as cur:
        cur.execute("SET SESSION sql_log_off = 1")
        for name, value in sorted(parameters.items()):
            if name not in restart_only:
                cur.execute(f"SET GLOBAL `{name}` = %s", (int(value) if value.isdigit() else value,))
        for db in databases:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{db}`")
        for u in users:
            cur.execute("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (u.name, passwords[u.name]))
            cur.execute("ALTER USER %s@'%%' IDENTIFIED BY %s", (u.name, passwords[u.name]))
            for g in u.grants:
                privs = "ALL PRIVILEGES" if g.privileges == "ReadWrite" else "SELECT, SHOW VIEW"
                cur.execute(f"GRANT {privs} ON `{g.database}`.* TO %s@'%%'", (u.name,))


# -- the instance manager's control port ------------------------------------------------------


def control(host: str, port: int, method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{host}:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}")


# -- deleting a backup's data -----------------------------------------------------------------


def delete_backup(engine: str, endpoint: str, region: str, access_key: str, secret_key: str,
                  bucket: str, prefix: str, server: str, backup_id: str) -> None:
    """Remove a completed backup from its Bucket: barman-cloud-backup-delete for PostgreSQL
    (which also drops the WAL only that backup needed), the stream object for MariaDB."""
    import os
    import pathlib
    import shutil
    import subprocess
    import sys

    if engine == "postgresql":
        here = pathlib.Path(sys.executable).parent / "barman-cloud-backup-delete"
        tool = str(here) if here.exists() else (shutil.which("barman-cloud-backup-delete") or "barman-cloud-backup-delete")
        env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
               "AWS_DEFAULT_REGION": region, "AWS_REGION": region}
        res = subprocess.run([tool, "--endpoint-url", endpoint, "--addressing-style", "path", "--backup-id", backup_id,
                              f"s3://{bucket}/{prefix}", server], env=env, capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            raise RuntimeError(f"barman-cloud-backup-delete failed: {res.stderr[-500:]}")
        return
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=access_key,
                      aws_secret_access_key=secret_key, config=Config(s3={"addressing_style": "path"}))
    s3.delete_object(Bucket=bucket, Key=f"{prefix}/{server}/mariadb/{backup_id}.xbstream")
