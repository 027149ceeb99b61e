"""`make run`: the whole local cloud in one command.

Builds or reuses the control plane, starts it, installs the CRDs, starts the operator in
the background (its log and pid file sit next to the cluster), applies `examples/` the
way a GitOps tool would (retrying until the namespaces the Projects create exist),
waits for the examples to become Ready and prints what came up.
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

from . import devcluster
from .devcluster import REPO, WORKDIR, kubeconfig_path, kubectl, log


def operator_files(name: str) -> tuple[pathlib.Path, pathlib.Path]:
    return WORKDIR / f"{name}-operator.pid", WORKDIR / f"{name}-operator.log"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_crds(name: str) -> None:
    """Apply crds/ and wait until the API server serves them."""
    res = kubectl(name, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"), check=False)
    if res.returncode != 0:
        raise SystemExit(f"stratus dev: installing CRDs failed: {res.stderr.strip()}")
    kubectl(name, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds"))


def operator_command(health_port: int) -> list[str]:
    return [sys.executable, "-m", "stratus", "operator", "--log-format", "plain", "--health-port", str(health_port)]


def start_operator(name: str) -> int:
    """Start the operator detached from this process; returns its pid."""
    pid_file, log_file = operator_files(name)
    if _alive(pid_file):
        log(f"operator already running (pid {pid_file.read_text().strip()}); log: {log_file}")
        return int(pid_file.read_text())
    env = {**os.environ, "KUBECONFIG": str(kubeconfig_path(name))}
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            operator_command(free_port()), env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))
    log(f"operator started (pid {proc.pid}); log: {log_file}")
    return proc.pid


def _alive(pid_file: pathlib.Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
        return True
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False


def stop_operator(name: str) -> None:
    pid_file, _ = operator_files(name)
    if _alive(pid_file):
        pid = int(pid_file.read_text())
        os.killpg(pid, signal.SIGTERM)
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        log(f"operator (pid {pid}) stopped")
    pid_file.unlink(missing_ok=True)


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
    start_operator(name)
    deadline = time.monotonic() + timeout
    apply_examples(name, deadline)
    log("waiting for the examples to become Ready ...")
    ok = True
    for kind in ("flavors", "projects", "keypairs", "servers"):
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
          f"  stop everything: make down")
    return 0 if ok else 1
