"""Helpers for integration tests: a client on the test cluster, polling waits, and the
operator as a real subprocess that tests may kill and restart."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
import typing as t

import kubernetes
from kubernetes.client.rest import ApiException

GROUP, VERSION = "stratus.dev", "v1alpha1"


def wait_for(predicate: t.Callable[[], t.Any], timeout: float = 60, interval: float = 0.25, what: str = "condition"):
    """Poll until `predicate()` returns something truthy; return it. Fails with `what`
    and the last value seen when the deadline passes."""
    deadline = time.monotonic() + timeout
    last: t.Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except ApiException as exc:
            last = f"ApiException {exc.status}: {exc.reason}"
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")


class Kube:
    """A thin client for tests, bound to one kubeconfig."""

    def __init__(self, kubeconfig: str):
        self.kubeconfig = kubeconfig
        self.api = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.apps = kubernetes.client.AppsV1Api(self.api)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(self.api)

    # Stratus objects -----------------------------------------------------------------
    def create(self, kind_plural: str, body: dict, namespace: str | None = None) -> dict:
        body = {"apiVersion": f"{GROUP}/{VERSION}", **body}
        if namespace:
            return self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, kind_plural, body)
        return self.custom.create_cluster_custom_object(GROUP, VERSION, kind_plural, body)

    def get(self, kind_plural: str, name: str, namespace: str | None = None, group: str = GROUP, version: str = VERSION) -> dict | None:
        try:
            if namespace:
                return self.custom.get_namespaced_custom_object(group, version, namespace, kind_plural, name)
            return self.custom.get_cluster_custom_object(group, version, kind_plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch(self, kind_plural: str, name: str, body: dict, namespace: str | None = None) -> dict:
        if namespace:
            return self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, kind_plural, name, body)
        return self.custom.patch_cluster_custom_object(GROUP, VERSION, kind_plural, name, body)

    def delete(self, kind_plural: str, name: str, namespace: str | None = None, group: str = GROUP, version: str = VERSION) -> None:
        try:
            if namespace:
                self.custom.delete_namespaced_custom_object(group, version, namespace, kind_plural, name)
            else:
                self.custom.delete_cluster_custom_object(group, version, kind_plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def vm(self, name: str, namespace: str) -> dict | None:
        return self.get("virtualmachines", name, namespace, group="kubevirt.io", version="v1")

    def vmi(self, name: str, namespace: str) -> dict | None:
        return self.get("virtualmachineinstances", name, namespace, group="kubevirt.io", version="v1")

    def condition(self, obj: dict | None, type_: str = "Ready") -> dict:
        for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
            if cond["type"] == type_:
                return cond
        return {}

    def events_for(self, namespace: str, name: str, kind: str) -> list:
        evs = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name},involvedObject.kind={kind}")
        return evs.items

    def kubectl(self, *args: str, input: str | None = None, check: bool = False) -> subprocess.CompletedProcess:
        kubectl = pathlib.Path(sys.executable).parent / "kubectl"
        return subprocess.run([str(kubectl), "--kubeconfig", self.kubeconfig, *args], input=input,
                              capture_output=True, text=True, check=check)


def pid_alive(pid: int) -> bool:
    """Whether a local process (an engine the pod runner started) is alive, zombies excluded."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


#: The one loopback address test image servers listen on; the test operator's egress policy
#: allows it (and nothing else of 127.0.0.0/8), so the refusal of loopback stays tested.
IMAGE_HOST = "127.0.0.2"


class Operator:
    """`stratus operator` as a child process with its own log file."""

    def __init__(self, kubeconfig: str, log_path: pathlib.Path):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start the operator; `env` adds settings (metrics port, ledger dir, ...)."""
        from stratus.dev.run import free_port, operator_command

        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "STRATUS_EGRESS_ALLOW_CIDRS": f"{IMAGE_HOST}/32", **(env or {})}
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(operator_command(free_port()), env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as a crash or an OOM kill would do."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""
