"""What both engines' instance managers share: ports, the supervised child, the control
server, Bucket access for backups."""

from __future__ import annotations

import datetime
import hashlib
import http.server
import json
import logging
import os
import pwd
import shutil
import signal
import socketserver
import subprocess
import sys
import threading
import time

log = logging.getLogger("stratus.instance")


def utcnow() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def port(name: str, default: int) -> int:
    return int(os.environ.get(f"STRATUS_PORT_{name.upper()}") or default)


def listen_host() -> str:
    return os.environ.get("STRATUS_LISTEN_HOST") or "0.0.0.0"


def unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("no unprivileged user (postgres or nobody) to run the engine as")


def as_user(argv: list[str], user: pwd.struct_passwd | None) -> list[str]:
    """argv run as ``user`` (when we are root). The engine keeps CAP_DAC_READ_SEARCH so it can
    reach a data directory below a root-only path (the pod runner's volumes live in the
    developer's cache); it writes only into directories it owns."""
    if user is None:
        return argv
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
            "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--"] + argv


def chown_tree(path: str, user: pwd.struct_passwd) -> None:
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for f in files:
            os.lchown(os.path.join(root, f), user.pw_uid, user.pw_gid)


def run(argv: list[str], env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    log.info("running %s", argv[0] if argv[0] != "setpriv" else argv[argv.index("--") + 1])
    res = subprocess.run(argv, env=env, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{os.path.basename(argv[0])} failed ({res.returncode}): {res.stderr[-2000:] or res.stdout[-2000:]}")
    return res


class Bucket:
    """A Bucket named by the pod's environment (STRATUS_ARCHIVE_* or STRATUS_RESTORE_*)."""

    def __init__(self, prefix: str):
        e = os.environ
        self.endpoint = e.get(f"{prefix}_ENDPOINT", "")
        self.region = e.get(f"{prefix}_REGION") or "us-east-1"
        self.access_key = e.get(f"{prefix}_ACCESS_KEY_ID", "")
        self.secret_key = e.get(f"{prefix}_SECRET_ACCESS_KEY", "")
        self.destination = e.get(f"{prefix}_DESTINATION", "")
        self.server = e.get(f"{prefix}_SERVER", "")

    @classmethod
    def from_env(cls, prefix: str) -> "Bucket | None":
        b = cls(prefix)
        return b if b.destination and b.access_key else None

    @property
    def bucket_name(self) -> str:
        return self.destination.removeprefix("s3://").split("/", 1)[0]

    @property
    def key_prefix(self) -> str:
        rest = self.destination.removeprefix("s3://").split("/", 1)
        return rest[1] if len(rest) > 1 else ""

    def env(self) -> dict:
        """The environment barman-cloud and boto3 read their credentials from."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region, "AWS_REGION": self.region}

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=Config(s3={"addressing_style": "path"}))

    def measure(self, prefix: str) -> tuple[int, str]:
        """(bytes, sha256 over sorted name/size/ETag) of the objects under ``prefix``."""
        s3 = self.client()
        total, lines = 0, []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket_name, Prefix=prefix):
            for o in page.get("Contents") or []:
                total += o["Size"]
                lines.append(f"{o['Key'][len(prefix):]} {o['Size']} {o.get('ETag', '')}")
        return total, hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


class Backups:
    """Backups run one at a time in a thread; their state is kept in memory (the operator
    records it in the DatabaseBackup's status as soon as it reads it)."""

    def __init__(self, run_backup):
        self.run_backup = run_backup
        self.state: dict[str, dict] = {}
        self.lock = threading.Lock()

    def start(self, backup_id: str) -> dict:
        with self.lock:
            if backup_id in self.state:
                return self.state[backup_id]
            if any(s["phase"] == "Running" for s in self.state.values()):
                return {"phase": "Busy"}
            st = self.state[backup_id] = {"id": backup_id, "phase": "Running", "beginTime": utcnow()}
        threading.Thread(target=self._run, args=(backup_id, st), daemon=True).start()
        return st

    def _run(self, backup_id: str, st: dict) -> None:
        t0 = time.monotonic()
        try:
            st.update(self.run_backup(backup_id))
            st.update(phase="Completed")
        except Exception as exc:  # noqa: BLE001 - reported to the operator, which writes the condition
            log.exception("backup %s failed", backup_id)
            st.update(phase="Failed", message=str(exc)[-1000:])
        st.update(endTime=utcnow(), durationSeconds=int(round(time.monotonic() - t0)))


def serve_control(port_: int, backups: Backups, health) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802
            if self.path == "/healthz":
                return self._send(200, health())
            if self.path.startswith("/backups/"):
                st = backups.state.get(self.path.split("/", 2)[2])
                return self._send(200 if st else 404, st or {"phase": "Unknown"})
            self._send(404, {})

        def do_POST(self):  # noqa: N802
            if self.path == "/backups":
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                return self._send(200, backups.start(str(body["id"])))
            self._send(404, {})

        def log_message(self, *args):  # quiet: the operator polls
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    srv = Server((listen_host(), port_), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()


def supervise(child: subprocess.Popen, on_term) -> int:
    """Wait for the engine; SIGTERM/SIGINT ask it to stop (``on_term``). Returns its code."""
    def handler(signum, _frame):
        log.info("signal %s: stopping the engine", signum)
        on_term()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    code = child.wait()
    log.info("engine exited with %s", code)
    return code


def run_engine(engine) -> int:
    """Run a database engine instance to its end: prepare the data directory, serve the
    control port (health, backups), start the server, create the roles once it accepts
    connections, and supervise it until it exits or is told to stop."""
    engine.prepare()
    serve_control(engine.control_port, Backups(engine.backup), engine.health)
    child = engine.start()
    threading.Thread(target=engine.ensure_roles, daemon=True).start()
    code = supervise(child, engine.stop)
    shutil.rmtree(engine.rundir, ignore_errors=True)
    return code


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s instance %(levelname)s %(message)s")
