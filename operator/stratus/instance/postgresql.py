"""The PostgreSQL instance manager (see stratus.instance).

Data layout on the volume: ``<data>/pgdata`` is PGDATA (mode 0700, owned by the engine's
user). Backups and WAL go to the Bucket through barman-cloud (``barman-cloud-wal-archive``
as archive_command, ``barman-cloud-backup`` for base backups, ``barman-cloud-restore`` and
``barman-cloud-wal-restore`` for restores); Bucket credentials reach barman through an
AWS shared-credentials file with one profile per Bucket (``archive``, ``restore``), written
in a private runtime directory, never into postgresql.conf.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from .common import Bucket, as_user, chown_tree, listen_host, log, port, run, run_engine, unprivileged_user

REPLICATION_USER = "streaming_replica"


def bindir(version: str) -> pathlib.Path:
    local = pathlib.Path(f"/usr/lib/postgresql/{version}/bin")
    if local.exists():
        return local
    found = shutil.which("postgres")
    if not found:
        raise RuntimeError(f"PostgreSQL {version} is not installed (no /usr/lib/postgresql/{version}/bin, no postgres on PATH)")
    return pathlib.Path(found).parent


def tool(name: str) -> str:
    """A barman-cloud script: beside this Python, else on PATH."""
    here = pathlib.Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


class PostgreSQL:
    def __init__(self, data: str, port_: int, control_port: int, version: str, settings: dict[str, str], primary: str | None):
        self.data = pathlib.Path(data)
        self.pgdata = self.data / "pgdata"
        self.port = port("postgresql", port_)
        self.control_port = port("control", control_port)
        self.version = version
        self.settings = settings
        self.primary = primary
        self.bin = bindir(version)
        self.password = os.environ.get("STRATUS_SUPERUSER_PASSWORD", "")
        self.replication_password = os.environ.get("STRATUS_REPLICATION_PASSWORD", "")
        self.instance = os.environ.get("STRATUS_INSTANCE", "postgresql")
        self.archive = Bucket.from_env("STRATUS_ARCHIVE")
        self.restore = Bucket.from_env("STRATUS_RESTORE")
        self.user = unprivileged_user() if os.geteuid() == 0 else None
        self.rundir = pathlib.Path(tempfile.mkdtemp(prefix="stratus-pg-"))
        self.child: subprocess.Popen | None = None
        self._write_runtime_files()

    # -- files -----------------------------------------------------------------------------

    def _own(self, path: pathlib.Path) -> None:
        if self.user:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def _private(self, path: pathlib.Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o600)
        self._own(path)

    def _write_runtime_files(self) -> None:
        self.rundir.chmod(0o700)
        self._own(self.rundir)
        self._private(self.rundir / "pgpass", f"*:*:*:{REPLICATION_USER}:{self.replication_password}\n")
        creds, config = [], []
        for profile, b in (("archive", self.archive), ("restore", self.restore)):
            if b:
                creds.append(f"[{profile}]\naws_access_key_id = {b.access_key}\naws_secret_access_key = {b.secret_key}\n")
                config.append(f"[profile {profile}]\nregion = {b.region}\n")
        self._private(self.rundir / "aws-credentials", "\n".join(creds))
        self._private(self.rundir / "aws-config", "\n".join(config))

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("STRATUS_ARCHIVE_", "STRATUS_RESTORE_", "STRATUS_SUPERUSER", "STRATUS_REPLICATION", "AWS_"))}
        env.update(AWS_SHARED_CREDENTIALS_FILE=str(self.rundir / "aws-credentials"), AWS_CONFIG_FILE=str(self.rundir / "aws-config"),
                   PGPASSFILE=str(self.rundir / "pgpass"), HOME=str(self.rundir))
        return env

    def _cmd(self, name: str, *args: str) -> list[str]:
        return as_user([str(self.bin / name), *args], self.user)

    def _barman(self, script: str, bucket: Bucket, profile: str, *args: str) -> list[str]:
        return [tool(script), "--endpoint-url", bucket.endpoint, "--profile", profile, "--addressing-style", "path",
                *args, bucket.destination, bucket.server]

    # -- preparing the data directory --------------------------------------------------------

    def prepare(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        if self.user:
            os.chown(self.data, self.user.pw_uid, self.user.pw_gid)
        if (self.pgdata / "PG_VERSION").exists():
            return
        if self.pgdata.exists():  # a half-done earlier attempt
            shutil.rmtree(self.pgdata)
        if self.restore:
            self._restore()
        elif self.primary:
            self._clone()
        else:
            self._initdb()
        self._write_hba()

    def _initdb(self) -> None:
        pwfile = self.rundir / "pwfile"
        self._private(pwfile, self.password + "\n")
        self.pgdata.mkdir(mode=0o700)
        self._own(self.pgdata)
        run(self._cmd("initdb", "-D", str(self.pgdata), "-U", "postgres", "--pwfile", str(pwfile), "-E", "UTF8",
                      "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"), env=self.env())
        pwfile.unlink()

    def _clone(self) -> None:
        host, _, p = self.primary.rpartition(":")
        self.pgdata.mkdir(mode=0o700)
        self._own(self.pgdata)
        run(self._cmd("pg_basebackup", "-h", host, "-p", p, "-U", REPLICATION_USER, "-D", str(self.pgdata),
                      "-X", "stream", "-c", "fast", "-w"), env=self.env())
        (self.pgdata / "standby.signal").touch()
        self._own(self.pgdata / "standby.signal")
        self.set_primary_conninfo(host, int(p))

    def set_primary_conninfo(self, host: str, p: int) -> None:
        """Written into postgresql.auto.conf, the file ALTER SYSTEM writes too, so the operator
        can later re-point the replica with ALTER SYSTEM and a reload."""
        auto = self.pgdata / "postgresql.auto.conf"
        lines = [line for line in (auto.read_text().splitlines() if auto.exists() else []) if not line.startswith("primary_conninfo")]
        lines.append(f"primary_conninfo = 'host={host} port={p} user={REPLICATION_USER} "
                     f"passfile={self.rundir / 'pgpass'} application_name={self.instance}'")
        auto.write_text("\n".join(lines) + "\n")
        self._own(auto)

    def _restore(self) -> None:
        backup_id = os.environ["STRATUS_RESTORE_BACKUP_ID"]
        self.pgdata.mkdir(mode=0o700)
        run(self._barman("barman-cloud-restore", self.restore, "restore") + [backup_id, str(self.pgdata)], env=self.env())
        for stale in ("postmaster.pid", "standby.signal", "recovery.signal"):
            (self.pgdata / stale).unlink(missing_ok=True)
        (self.pgdata / "recovery.signal").touch()
        if self.user:
            chown_tree(str(self.pgdata), self.user)
        self.pgdata.chmod(0o700)

    def _write_hba(self) -> None:
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text("# written by the Stratus instance manager\n"
                       "local all all trust\n"
                       f"host replication {REPLICATION_USER} all scram-sha-256\n"
                       "host all all all scram-sha-256\n")
        self._own(hba)

    # -- running ----------------------------------------------------------------------------------

    def server_args(self) -> list[str]:
        s = {"listen_addresses": "*" if listen_host() == "0.0.0.0" else listen_host(),
             "unix_socket_directories": str(self.rundir), "wal_level": "replica", "hot_standby": "on",
             "max_wal_senders": "10", "max_replication_slots": "10", "wal_keep_size": "256MB",
             "cluster_name": self.instance, "password_encryption": "scram-sha-256"}
        if self.archive:
            s.update(archive_mode="on", archive_timeout="60s",
                     archive_command=" ".join(self._barman("barman-cloud-wal-archive", self.archive, "archive")) + " %p")
        if (self.pgdata / "recovery.signal").exists() and self.restore:
            s["restore_command"] = " ".join(self._barman("barman-cloud-wal-restore", self.restore, "restore")) + " %f %p"
            target = os.environ.get("STRATUS_RESTORE_TARGET_TIME")
            if target:
                s.update(recovery_target_time=target.replace("T", " ").replace("Z", "+00"), recovery_target_action="promote")
        s.update(self.settings)
        args = ["-D", str(self.pgdata), "-p", str(self.port)]
        for k, v in s.items():
            args += ["-c", f"{k}={v}"]
        return args

    def start(self) -> subprocess.Popen:
        self.child = subprocess.Popen(self._cmd("postgres", *self.server_args()), env=self.env(), stdin=subprocess.DEVNULL)
        return self.child

    def stop(self) -> None:
        if self.child and self.child.poll() is None:
            self.child.send_signal(2)  # SIGINT: fast shutdown

    def connect(self, **kw):
        import psycopg

        return psycopg.connect(host=str(self.rundir), port=self.port, user="postgres", dbname="postgres", autocommit=True, **kw)

    def ensure_roles(self) -> None:
        """Once the server accepts connections and is not in recovery: the superuser's and
        the replication user's passwords equal the Secret's (a restored copy inherits the
        source's roles). Runs over the local socket (trust), in a session that logs nothing."""
        from psycopg import sql

        while self.child and self.child.poll() is None:
            try:
                with self.connect(connect_timeout=3) as conn:
                    if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                        if (self.pgdata / "standby.signal").exists():
                            return  # a replica: roles come from the primary
                        time.sleep(1)
                        continue
                    conn.execute("SET log_statement = 'none'")
                    conn.execute(sql.SQL("ALTER ROLE postgres WITH PASSWORD {}").format(sql.Literal(self.password)))
                    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (REPLICATION_USER,)).fetchone()
                    verb = "ALTER" if exists else "CREATE"
                    conn.execute(sql.SQL(verb + " ROLE {} WITH REPLICATION LOGIN PASSWORD {}").format(
                        sql.Identifier(REPLICATION_USER), sql.Literal(self.replication_password)))
                    log.info("roles ensured")
                    return
            except Exception as exc:  # noqa: BLE001 - the server is still starting
                log.debug("waiting for the server: %s", exc)
                time.sleep(0.5)

    def health(self) -> dict:
        return {"engine": "postgresql", "running": bool(self.child and self.child.poll() is None)}

    # -- backups -------------------------------------------------------------------------------------

    def backup(self, backup_id: str) -> dict:
        if not self.archive:
            raise RuntimeError("this instance has no backup Bucket (spec.backup.bucket)")
        env = {**self.env(), "PGPASSWORD": self.password}
        run(self._barman("barman-cloud-backup", self.archive, "archive", "-h", str(self.rundir), "-p", str(self.port),
                         "-U", "postgres", "--immediate-checkpoint", "-n", backup_id), env=env)
        out = run([tool("barman-cloud-backup-list"), "--endpoint-url", self.archive.endpoint, "--profile", "archive",
                   "--addressing-style", "path", "--format", "json", self.archive.destination, self.archive.server], env=env).stdout
        listed = json.loads(out).get("backups_list", [])
        mine = [b for b in listed if b.get("backup_name") == backup_id]
        if not mine:
            raise RuntimeError(f"barman-cloud-backup-list does not show backup {backup_id}")
        barman_id = mine[-1]["backup_id"]
        prefix = f"{self.archive.key_prefix}/{self.archive.server}/base/{barman_id}/"
        size, checksum = self.archive.measure(prefix)
        with self.connect() as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        return {"backupId": barman_id, "sizeBytes": size, "checksum": checksum, "engineVersion": version}


def main(data: str, port_: int, control_port: int, version: str, settings: dict[str, str], primary: str | None) -> int:
    return run_engine(PostgreSQL(data, port_, control_port, version, settings, primary))
