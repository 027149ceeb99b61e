"""Databases benchmark: time to a ready, connectable database through Stratus, against the
floor of running the engine's own initialisation and starting it directly.

Run from the project root (the local control plane binaries must be built):

    .venv/bin/python benchmarks/databases/bench.py            # 5 tries per engine, writes results.md
    .venv/bin/python benchmarks/databases/bench.py --tries 2  # prints only

Side by side in one run, for PostgreSQL 15 and MariaDB 10.11:

* **Stratus**: a `Database` (one instance, one declared database and user) is created; the
  clock stops when a client logs in with the connection Secret's credentials and runs
  `SELECT 1`. This includes the operator's reconcile, the scheduler, kwok, the pod
  runner's poll, the instance manager, initdb / mariadb-install-db and the first start.
* **Floor**: the same engine initialised and started by hand (initdb + postgres, or
  mariadb-install-db + mariadbd) on a fresh directory, the clock stopping at the first
  successful `SELECT 1`.

The benchmark uses its own cluster (`databases-bench`, deleted afterwards unless --keep).
Not measured yet (see README): backup throughput, restore time, PITR accuracy over many
targets, failover time.
"""

from __future__ import annotations

import argparse
import base64
import os
import pathlib
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import kubernetes

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "operator"))

from stratus.dev import cluster as devcluster, run as devrun  # noqa: E402
from stratus.instance.common import unprivileged_user, as_user  # noqa: E402

G, V = "stratus.dev", "v1alpha1"


def connectable(engine: str, host: str, port: int, user: str, password: str, database: str | None = None) -> bool:
    try:
        if engine == "postgresql":
            import psycopg

            with psycopg.connect(host=host, port=port, user=user, password=password, dbname=database or "postgres", connect_timeout=2) as c:
                c.execute("SELECT 1")
        else:
            import pymysql

            with pymysql.connect(host=host, port=port, user=user, password=password, database=database, connect_timeout=2) as c:
                c.cursor().execute("SELECT 1")
        return True
    except Exception:  # noqa: BLE001 - not yet
        return False


def floor(engine: str) -> float:
    """initdb/mariadb-install-db + start, until SELECT 1 answers."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="dbbench-"))
    port = devrun.free_port()
    user = unprivileged_user() if os.geteuid() == 0 else None
    t0 = time.monotonic()
    if engine == "postgresql":
        pgdata = d / "pgdata"
        pgdata.mkdir(mode=0o700)
        if user:
            os.chown(d, user.pw_uid, user.pw_gid)
            os.chown(pgdata, user.pw_uid, user.pw_gid)
        pw = d / "pw"
        pw.write_text("bench\n")
        pw.chmod(0o644)
        bindir = "/usr/lib/postgresql/15/bin"
        subprocess.run(as_user([f"{bindir}/initdb", "-D", str(pgdata), "-U", "postgres", "--pwfile", str(pw), "--auth=scram-sha-256",
                                "-E", "UTF8", "--locale=C"], user), check=True, capture_output=True)
        proc = subprocess.Popen(as_user([f"{bindir}/postgres", "-D", str(pgdata), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                                         "-c", f"unix_socket_directories={d}"], user), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        creds = ("postgres", "bench")
    else:
        data = d / "mysql"
        data.mkdir()
        subprocess.run(["mariadb-install-db", f"--datadir={data}", "--user=root", "--auth-root-authentication-method=normal",
                        "--skip-test-db"], check=True, capture_output=True)
        proc = subprocess.Popen(["mariadbd", f"--datadir={data}", f"--port={port}", "--bind-address=127.0.0.1", "--user=root",
                                 f"--socket={d}/s.sock", "--skip-grant-tables"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        creds = ("root", "")
    while not connectable(engine, "127.0.0.1", port, *creds):
        time.sleep(0.05)
    elapsed = time.monotonic() - t0
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    shutil.rmtree(d, ignore_errors=True)
    return elapsed


class Stratus:
    def __init__(self, kubeconfig: str, root: pathlib.Path):
        self.api = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)
        env = {**os.environ, "KUBECONFIG": kubeconfig, "STRATUS_DATABASE_INTERVAL": "1"}
        self.op = subprocess.Popen(devrun.operator_command(devrun.free_port()), env=env, stdout=open(root / "operator.log", "wb"),
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.runner = subprocess.Popen(devrun.podrunner_command(root / "engines"), env=env, stdout=open(root / "podrunner.log", "wb"),
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.ns = f"dbbench-{uuid.uuid4().hex[:5]}"
        self.core.create_namespace({"metadata": {"name": self.ns}})
        self.vt = f"dbbench-{uuid.uuid4().hex[:5]}"
        self.custom.create_cluster_custom_object(G, V, "volumetypes", {
            "apiVersion": f"{G}/{V}", "kind": "VolumeType", "metadata": {"name": self.vt},
            "spec": {"storageClassName": "standin-csi", "volumeMode": "Filesystem"}})
        time.sleep(3)

    def once(self, engine: str, i: int) -> float:
        name = f"{engine[:2]}{i}"
        body = {"apiVersion": f"{G}/{V}", "kind": "Database", "metadata": {"name": name},
                "spec": {"engine": engine, "storage": {"size": "1Gi", "volumeType": self.vt},
                         "databases": [{"name": "app"}], "users": [{"name": "app", "grants": [{"database": "app"}]}]}}
        t0 = time.monotonic()
        self.custom.create_namespaced_custom_object(G, V, self.ns, "databases", body)
        while True:
            try:
                s = self.core.read_namespaced_secret(f"{name}-user-app", self.ns).data or {}
                d = {k: base64.b64decode(v).decode() for k, v in s.items()}
                if "host" in d and connectable(engine, d["host"], int(d["port"]), d["user"], d["password"], "app"):
                    break
            except kubernetes.client.rest.ApiException:
                pass
            if time.monotonic() - t0 > 300:
                raise RuntimeError(f"{name} not connectable after 300 s")
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        self.custom.delete_namespaced_custom_object(G, V, self.ns, "databases", name)
        return elapsed

    def close(self) -> None:
        self.core.delete_namespace(self.ns)
        self.custom.delete_cluster_custom_object(G, V, "volumetypes", self.vt)
        time.sleep(5)
        for p in (self.op, self.runner):
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(60)


def summary(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return f"{statistics.median(xs):.2f} s (p95 {p95:.2f} s, n={len(xs)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tries", type=int, default=5)
    ap.add_argument("--cluster", default="databases-bench")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    kubeconfig = os.environ.get("KUBECONFIG") or str(devcluster.up(args.cluster, nodes=2, build=False))
    if not os.environ.get("KUBECONFIG"):
        devrun.install_crds(args.cluster)
    root = pathlib.Path(tempfile.mkdtemp(prefix="dbbench-run-"))
    results: dict[tuple[str, str], list[float]] = {}
    st = Stratus(kubeconfig, root)
    try:
        for engine in ("postgresql", "mariadb"):
            for i in range(args.tries):  # interleaved, so both see the same machine load
                results.setdefault((engine, "floor"), []).append(floor(engine))
                results.setdefault((engine, "stratus"), []).append(st.once(engine, i))
    finally:
        st.close()
        if not args.keep and not os.environ.get("KUBECONFIG"):
            devcluster.down(args.cluster)
    lines = ["# Databases benchmark results", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
             f"{args.tries} tries per engine, floor and Stratus interleaved.", "",
             "| engine | floor: init + start directly (median) | Stratus: Database to connectable (median) |",
             "|---|---|---|"]
    for engine in ("postgresql", "mariadb"):
        lines.append(f"| {engine} | {summary(results[(engine, 'floor')])} | {summary(results[(engine, 'stratus')])} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.tries >= 5:
        (HERE / "results.md").write_text(text + "\n" + (HERE / "notes.md").read_text() if (HERE / "notes.md").exists() else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
