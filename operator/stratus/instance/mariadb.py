"""The MariaDB instance manager (see stratus.instance).

Data layout on the volume: ``<data>/mysql`` is the datadir. Backups are mariadb-backup
physical backups streamed (xbstream) straight into the Bucket with boto3's multipart
upload, hashed on the way (the checksum is the stream's sha256); a restore streams the
object back through ``mbstream -x`` and runs ``mariadb-backup --prepare``.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time

from .common import Bucket, listen_host, log, port, run, run_engine


def server_binary() -> str:
    for name in ("mariadbd", "mysqld"):
        for d in ("/usr/sbin", "/usr/bin"):
            if os.path.exists(f"{d}/{name}"):
                return f"{d}/{name}"
    found = shutil.which("mariadbd") or shutil.which("mysqld")
    if not found:
        raise RuntimeError("MariaDB is not installed (no mariadbd)")
    return found


class _HashingReader:
    def __init__(self, stream):
        self.stream, self.sha, self.size = stream, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data


class MariaDB:
    def __init__(self, data: str, port_: int, control_port: int, version: str, settings: dict[str, str]):
        self.data = pathlib.Path(data)
        self.datadir = self.data / "mysql"
        self.port = port("mysql", port_)
        self.control_port = port("control", control_port)
        self.version = version
        self.settings = settings
        self.password = os.environ.get("STRATUS_SUPERUSER_PASSWORD", "")
        self.archive = Bucket.from_env("STRATUS_ARCHIVE")
        self.restore = Bucket.from_env("STRATUS_RESTORE")
        self.root = os.geteuid() == 0
        self.rundir = pathlib.Path(tempfile.mkdtemp(prefix="stratus-my-"))
        self.socket = self.rundir / "mysqld.sock"
        self.child: subprocess.Popen | None = None

    def _user_args(self) -> list[str]:
        return ["--user=root"] if self.root else []

    def prepare(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        if (self.datadir / "mysql").is_dir():
            return
        if self.datadir.exists():
            shutil.rmtree(self.datadir)
        if self.restore:
            self._restore()
            return
        self.datadir.mkdir()
        run(["mariadb-install-db", f"--datadir={self.datadir}", *self._user_args(), "--auth-root-authentication-method=normal",
             "--skip-test-db", "--skip-name-resolve"])

    def _restore(self) -> None:
        backup_id = os.environ["STRATUS_RESTORE_BACKUP_ID"]
        work = self.data / "restore.tmp"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        key = f"{self.restore.key_prefix}/{self.restore.server}/mariadb/{backup_id}.xbstream"
        body = self.restore.client().get_object(Bucket=self.restore.bucket_name, Key=key)["Body"]
        x = subprocess.Popen(["mbstream", "-x", "-C", str(work)], stdin=subprocess.PIPE)
        for chunk in iter(lambda: body.read(1 << 20), b""):
            x.stdin.write(chunk)
        x.stdin.close()
        if x.wait() != 0:
            raise RuntimeError("mbstream -x failed")
        run(["mariadb-backup", "--prepare", f"--target-dir={work}"])
        work.rename(self.datadir)

    def server_args(self) -> list[str]:
        args = [server_binary(), f"--datadir={self.datadir}", f"--port={self.port}", f"--bind-address={listen_host()}",
                f"--socket={self.socket}", f"--pid-file={self.rundir / 'mysqld.pid'}", *self._user_args(),
                "--skip-name-resolve", "--log-bin=mysql-bin", "--server-id=1"]
        for k, v in self.settings.items():
            args.append(f"--{k.replace('_', '-')}={v}")
        args.append(f"--init-file={self._init_file()}")
        return args

    def start(self) -> subprocess.Popen:
        self.child = subprocess.Popen(self.server_args(), stdin=subprocess.DEVNULL)
        return self.child

    def stop(self) -> None:
        if self.child and self.child.poll() is None:
            self.child.terminate()

    def connect(self, password: str | None):
        import pymysql

        return pymysql.connect(unix_socket=str(self.socket), user="root", password=password or "", autocommit=True, connect_timeout=3)

    def _init_file(self) -> pathlib.Path:
        """SQL mariadbd runs at start with full privileges (--init-file): root's password is
        the Secret's, root may log in over TCP, no anonymous or host-bound root accounts
        remain. Works on a fresh datadir and on a restored copy of another Database alike."""
        pw = self.password.replace("\\", "\\\\").replace("'", "\\'")
        sql = ["SET SESSION sql_log_off = 1;",
               "DELETE FROM mysql.global_priv WHERE User = '' OR (User = 'root' AND Host NOT IN ('localhost', '%'));",
               "FLUSH PRIVILEGES;"]
        for host in ("localhost", "%"):
            sql += [f"CREATE USER IF NOT EXISTS 'root'@'{host}' IDENTIFIED BY '{pw}';",
                    f"ALTER USER 'root'@'{host}' IDENTIFIED BY '{pw}';",
                    f"GRANT ALL PRIVILEGES ON *.* TO 'root'@'{host}' WITH GRANT OPTION;"]
        path = self.rundir / "init.sql"
        path.write_text("\n".join(sql) + "\n")
        path.chmod(0o600)
        return path

    def ensure_roles(self) -> None:
        """Once root logs in with the Secret's password, the init file (which holds it) goes."""
        while self.child and self.child.poll() is None:
            try:
                self.connect(self.password).close()
                (self.rundir / "init.sql").unlink(missing_ok=True)
                log.info("roles ensured")
                return
            except Exception:  # noqa: BLE001 - still starting
                time.sleep(0.5)

    def health(self) -> dict:
        return {"engine": "mariadb", "running": bool(self.child and self.child.poll() is None)}

    def backup(self, backup_id: str) -> dict:
        if not self.archive:
            raise RuntimeError("this instance has no backup Bucket (spec.backup.bucket)")
        target = self.rundir / f"backup-{backup_id}"
        target.mkdir(exist_ok=True)
        key = f"{self.archive.key_prefix}/{self.archive.server}/mariadb/{backup_id}.xbstream"
        proc = subprocess.Popen(["mariadb-backup", "--backup", "--stream=xbstream", f"--target-dir={target}",
                                 f"--socket={self.socket}", "--user=root", f"--datadir={self.datadir}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "MYSQL_PWD": self.password})
        reader = _HashingReader(proc.stdout)
        errors: list[bytes] = []
        t = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
        t.start()
        self.archive.client().upload_fileobj(reader, self.archive.bucket_name, key)
        code = proc.wait()
        t.join(5)
        shutil.rmtree(target, ignore_errors=True)
        if code != 0:
            raise RuntimeError(f"mariadb-backup failed ({code}): {b''.join(errors).decode(errors='replace')[-1500:]}")
        with self.connect(self.password) as conn, conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            version = cur.fetchone()[0]
        return {"backupId": backup_id, "sizeBytes": reader.size, "checksum": reader.sha.hexdigest(), "engineVersion": version}


def main(data: str, port_: int, control_port: int, version: str, settings: dict[str, str], primary: str | None) -> int:
    if primary:
        log.warning("MariaDB replicas are not implemented yet; running as a standalone server")
    return run_engine(MariaDB(data, port_, control_port, version, settings))
