"""`make run`: the whole local cloud in one command.

Builds or reuses the control plane, starts it, installs the CRDs, starts the operator in
the background (its log and pid file sit next to the cluster), applies `examples/` the
way a GitOps tool would (retrying until the namespaces the Projects create exist),
waits for the examples to become Ready and prints what came up.
"""

from __future__ import annotations

import os
import urllib.error
import pathlib
import signal
import socket
import subprocess
import sys
import time

from . import cluster as devcluster
from .cluster import REPO, WORKDIR, kubeconfig_path, kubectl, log


ROLES = REPO / "charts" / "stratus" / "templates" / "roles.yaml"
#: The namespace the local operator keeps its own objects in (admin Secrets, ledger keys).
SYSTEM_NAMESPACE = "stratus-system"
#: Where the local object store listens (fixed, so the BucketClass endpoint stays valid).
S3_PORT = int(os.environ.get("STRATUS_DEV_S3_PORT", "7480"))
#: Where the local dashboard listens.
DASHBOARD_PORT = int(os.environ.get("STRATUS_DEV_DASHBOARD_PORT", "8300"))


def operator_files(name: str) -> tuple[pathlib.Path, pathlib.Path]:
    return WORKDIR / f"{name}-operator.pid", WORKDIR / f"{name}-operator.log"


def s3_files(name: str) -> tuple[pathlib.Path, pathlib.Path]:
    return WORKDIR / f"{name}-s3.pid", WORKDIR / f"{name}-s3"


def start_object_store(name: str) -> None:
    """Start versitygw (a real S3 server) on 127.0.0.1:S3_PORT with its data next to the
    cluster, and register it as the `default` BucketClass with its admin keys in a Secret.
    The keys stay in files readable by this user only and in the Secret; never printed."""
    import json
    import urllib.request

    pid_file, data_dir = s3_files(name)
    url = f"http://127.0.0.1:{S3_PORT}"
    if not _alive(pid_file):
        data_dir.mkdir(parents=True, exist_ok=True)
        with open(data_dir.parent / f"{name}-s3.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "stratus.dev.s3server", str(data_dir), "--port", str(S3_PORT)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except urllib.error.HTTPError:
                break  # it answers (403 without credentials): it is up
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"stratus dev: the object store did not start; see {data_dir.parent / (name + '-s3.log')}")
                time.sleep(0.3)
        log(f"object store (versitygw) started on {url} (pid {proc.pid})")
    keys = json.loads((data_dir / "root-credentials.json").read_text())
    devcluster.apply(name, [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}},
    ])
    devcluster.apply(name, [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-admin", "namespace": SYSTEM_NAMESPACE},
         "type": "Opaque", "stringData": {"accessKey": keys["accessKey"], "secretKey": keys["secretKey"]}},
        {"apiVersion": "stratus.dev/v1alpha1", "kind": "BucketClass", "metadata": {"name": "default"},
         "spec": {"endpoint": url, "region": "us-east-1", "credentialScoping": "Versitygw",
                  "credentialsSecret": {"name": "s3-admin", "namespace": SYSTEM_NAMESPACE},
                  "deletionPolicy": "Retain"}},
    ])


def stop_object_store(name: str) -> None:
    pid_file, _ = s3_files(name)
    if _alive(pid_file):
        os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        log("object store stopped")
    pid_file.unlink(missing_ok=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_crds(name: str) -> None:
    """Apply crds/ and the shipped roles and policies, and wait until the API server serves them."""
    res = kubectl(name, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"), check=False)
    if res.returncode != 0:
        raise SystemExit(f"stratus dev: installing CRDs failed: {res.stderr.strip()}")
    kubectl(name, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds"))
    # The project roles and admission policies the chart ships (plain YAML, no templating).
    res = kubectl(name, "apply", "--server-side", "--force-conflicts", "-f", str(ROLES), check=False)
    if res.returncode != 0:
        raise SystemExit(f"stratus dev: installing the project roles failed: {res.stderr.strip()}")


def operator_command(health_port: int) -> list[str]:
    return [sys.executable, "-m", "stratus", "operator", "--log-format", "plain", "--health-port", str(health_port)]


def _start_background(what: str, pid_file: pathlib.Path, log_file: pathlib.Path, argv: list[str], env: dict) -> int:
    """Start a process detached from this one (its own session), recording its pid."""
    if _alive(pid_file):
        log(f"{what} already running (pid {pid_file.read_text().strip()}); log: {log_file}")
        return int(pid_file.read_text())
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    log(f"{what} started (pid {proc.pid}); log: {log_file}")
    return proc.pid


def _stop_background(what: str, pid_file: pathlib.Path) -> None:
    if _alive(pid_file):
        pid = int(pid_file.read_text())
        os.killpg(pid, signal.SIGTERM)
        for _ in range(150):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        log(f"{what} (pid {pid}) stopped")
    pid_file.unlink(missing_ok=True)


def start_operator(name: str) -> int:
    """Start the operator detached from this process; returns its pid."""
    pid_file, log_file = operator_files(name)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig_path(name)), "STRATUS_NAMESPACE": SYSTEM_NAMESPACE,
           "STRATUS_LEDGER_DIR": str(WORKDIR / f"{name}-ledger")}
    return _start_background("operator", pid_file, log_file, operator_command(free_port()), env)


def podrunner_files(name: str) -> tuple[pathlib.Path, pathlib.Path]:
    return WORKDIR / f"{name}-podrunner.pid", WORKDIR / f"{name}-podrunner.log"


def podrunner_command(root: pathlib.Path) -> list[str]:
    return [sys.executable, "-m", "stratus", "dev", "podrunner", "--root", str(root)]


def start_podrunner(name: str) -> int:
    """Start the local pod runner: engine Pods' containers as real local processes."""
    pid_file, log_file = podrunner_files(name)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig_path(name))}
    return _start_background("pod runner", pid_file, log_file, podrunner_command(WORKDIR / f"{name}-engines"), env)


def stop_podrunner(name: str) -> None:
    _stop_background("pod runner", podrunner_files(name)[0])


def _alive(pid_file: pathlib.Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
        return True
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False


def stop_operator(name: str) -> None:
    _stop_background("operator", operator_files(name)[0])


def dashboard_files(name: str) -> tuple[pathlib.Path, pathlib.Path]:
    return WORKDIR / f"{name}-dashboard.pid", WORKDIR / f"{name}-dashboard.log"


def start_dashboard(name: str) -> str:
    """Start `stratus dashboard` detached (like the operator) on 127.0.0.1:DASHBOARD_PORT;
    returns its URL. It knows the API server from the cluster's kubeconfig; users sign in
    with their own AccessToken kubeconfig."""
    pid_file, log_file = dashboard_files(name)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig_path(name))}
    _start_background("dashboard", pid_file, log_file,
                      [sys.executable, "-m", "stratus", "dashboard", "--port", str(DASHBOARD_PORT)], env)
    return f"http://127.0.0.1:{DASHBOARD_PORT}/"


def stop_dashboard(name: str) -> None:
    _stop_background("dashboard", dashboard_files(name)[0])


def operator_status(name: str) -> None:
    pid_file, log_file = operator_files(name)
    if _alive(pid_file):
        log(f"operator running (pid {pid_file.read_text().strip()}); log: {log_file}")
    else:
        log("operator not running")


def apply_examples(name: str, deadline: float) -> None:
    """kubectl apply -R examples/, again until everything is accepted (namespaces that
    Projects create appear a moment after the Projects)."""
    while True:
        res = kubectl(name, "apply", "-R", "-f", str(REPO / "examples"), check=False)
        if res.returncode == 0:
            print(res.stdout, end="")
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"stratus dev: examples/ could not be applied: {res.stderr.strip()}")
        time.sleep(1)


def run(name: str, nodes: int = 3, timeout: int = 180) -> int:
    started = time.monotonic()
    devcluster.up(name, nodes=nodes)
    install_crds(name)
    start_object_store(name)
    start_podrunner(name)
    start_operator(name)
    dashboard_url = start_dashboard(name)
    deadline = time.monotonic() + timeout
    apply_examples(name, deadline)
    log("waiting for the examples to become Ready ...")
    ok = True
    for kind in ("flavors", "projects", "keypairs", "bucketclasses", "buckets", "servers", "dataclusters"):
        remaining = max(5, int(deadline - time.monotonic()))
        res = kubectl(name, "wait", "--for=condition=Ready", kind, "--all", "-A", f"--timeout={remaining}s", check=False)
        if res.returncode != 0:
            ok = False
            log(f"not all {kind} became Ready: {res.stderr.strip()}")
    print(kubectl(name, "get", "stratus", "-A", check=False).stdout)
    kc = kubeconfig_path(name)
    _, log_file = operator_files(name)
    print(f"Stratus is up in {time.monotonic() - started:.0f}s.\n"
          f"  export KUBECONFIG={kc}\n"
          f"  kubectl get servers -A            # the example Server\n"
          f"  kubectl get stratus -A            # every Stratus object\n"
          f"  operator log: {log_file}\n"
          f"  dashboard: {dashboard_url}  sign in with the kubeconfig of an access token:\n"
          f"    stratus token issue --project demo --user alice --out alice.kubeconfig\n"
          f"  stop everything: make down")
    return 0 if ok else 1
