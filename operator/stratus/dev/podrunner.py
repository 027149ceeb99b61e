"""Real engines behind simulated pods: the local stand-in for the kubelet's container runtime.

On the local control plane kwok plays the kubelet: a Pod reaches Running but no container
runs. Where a kind's value lies in what an engine does (PostgreSQL, MariaDB, Spark), this
runner runs the Pod's first container *as a local process*, the way ``ipmi_sim`` stands for
a BMC. It is development tooling (``stratus dev podrunner``; started by ``make run`` and by
the integration tests), never part of the operator.

Which Pods
    Pods labelled ``stratus.dev/engine`` (any value; the operator sets it on every engine
    pod, on a real cluster too, where it is only a label) that are bound to a node and not
    being deleted. A Pod that goes away has its process stopped (SIGTERM to the process
    group, SIGKILL after ``STOP_GRACE`` seconds).

How a container becomes a process
    argv is the container's ``command`` + ``args``; an argv[0] of ``stratus`` or
    ``python``/``python3`` resolves to this Python environment. The environment is the
    container's ``env`` resolved as the kubelet would (``value``; ``valueFrom`` of
    ``secretKeyRef``, ``configMapKeyRef``, ``fieldRef`` for ``metadata.name``,
    ``metadata.namespace``, ``metadata.uid``, ``spec.nodeName``, ``status.podIP``),
    plus:

    - ``STRATUS_LOCAL_ENGINE=1`` and ``STRATUS_LISTEN_HOST=127.0.0.1``;
    - ``STRATUS_PORT_<NAME>`` for each *named* container port: a free loopback port the
      process must listen on instead of the container port (``NAME`` upper-cased, ``-``
      as ``_``). The program (the engine's entrypoint, e.g. an instance manager in the
      stratus package) honours these variables; on a real cluster they are unset and it
      uses its container ports.

    Volumes: each ``volumeMount.mountPath`` is mapped to a local directory, and every
    argv word and env value that starts with a mount path is rewritten to the local
    directory. A ``persistentVolumeClaim`` volume maps to ``<root>/<ns>/pvc-<claim>-<uid8>``
    (so data outlives the Pod, as a PVC's does), ``emptyDir`` to a directory of the Pod,
    ``secret``/``configMap`` volumes to a directory written with their keys (mode 0600).
    ``STRATUS_MOUNT_<VOLUME>`` names each local directory too.

What the operator sees
    The Pod is annotated ``stratus.dev/local-ports`` (JSON: port name -> loopback port)
    and ``stratus.dev/local-pid``; a process that exits is annotated
    ``stratus.dev/local-exit`` (its exit code) and ``stratus.dev/local-termination-message``
    (what it wrote to ``$STRATUS_TERMINATION_LOG``, the kubelet's ``terminationMessagePath``
    stand-in, at most 4096 bytes as the kubelet keeps) and is restarted with backoff when the Pod's
    ``restartPolicy`` is ``Always`` (or ``OnFailure`` and the code is not 0), as the
    kubelet would. The operator reaches an engine through
    :func:`stratus.core.endpoints.pod_endpoint`: the loopback port when the
    annotation is there, the Pod IP and container port otherwise.

State survives a restart of the runner: each process is recorded in
``<root>/run/<pod uid>.json`` and adopted when still alive. Stopping the runner stops its
processes unless ``--keep`` is given.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import kubernetes
from kubernetes.client.rest import ApiException

log = logging.getLogger("stratus.podrunner")

ENGINE_LABEL = "stratus.dev/engine"
PORTS_ANNOTATION = "stratus.dev/local-ports"
PID_ANNOTATION = "stratus.dev/local-pid"
EXIT_ANNOTATION = "stratus.dev/local-exit"
TERMINATION_ANNOTATION = "stratus.dev/local-termination-message"
STOP_GRACE = 15.0
POLL = 0.5


def env_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).upper()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Proc:
    uid: str
    namespace: str
    name: str
    pid: int
    ports: dict[str, int]
    started: float
    restarts: int = 0
    popen: subprocess.Popen | None = None
    exit_code: int | None = None
    next_start: float = 0.0

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:  # a zombie of ours, or a pid reused by something else after a reboot
            stat = pathlib.Path(f"/proc/{self.pid}/stat").read_text()
            return stat.rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def record(self) -> dict:
        return {"uid": self.uid, "namespace": self.namespace, "name": self.name, "pid": self.pid,
                "ports": self.ports, "started": self.started, "restarts": self.restarts}


class PodRunner:
    def __init__(self, root: pathlib.Path, api: kubernetes.client.ApiClient | None = None):
        self.root = root
        self.api = api or kubernetes.client.ApiClient()
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.procs: dict[str, Proc] = {}
        self.stopping = threading.Event()
        (root / "run").mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(parents=True, exist_ok=True)
        self._adopt()

    # ---------------------------------------------------------------- bookkeeping

    def _state_file(self, uid: str) -> pathlib.Path:
        return self.root / "run" / f"{uid}.json"

    def _termination_file(self, uid: str) -> pathlib.Path:
        return self.root / "run" / f"{uid}.termination-log"

    def _adopt(self) -> None:
        for f in (self.root / "run").glob("*.json"):
            try:
                rec = json.loads(f.read_text())
                p = Proc(rec["uid"], rec["namespace"], rec["name"], rec["pid"], rec["ports"], rec["started"], rec.get("restarts", 0))
            except (OSError, ValueError, KeyError):
                f.unlink(missing_ok=True)
                continue
            if p.alive():
                self.procs[p.uid] = p
                log.info("adopted %s/%s (pid %s)", p.namespace, p.name, p.pid)
            else:
                self.procs[p.uid] = p  # restarted on the next pass if its Pod still wants it
                p.exit_code = -1

    # ---------------------------------------------------------------- resolution

    def _secret(self, namespace: str, name: str) -> dict[str, str]:
        s = self.core.read_namespaced_secret(name, namespace)
        return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}

    def _configmap(self, namespace: str, name: str) -> dict[str, str]:
        return dict(self.core.read_namespaced_config_map(name, namespace).data or {})

    def _field(self, pod: dict, path: str) -> str:
        return {
            "metadata.name": pod["metadata"]["name"],
            "metadata.namespace": pod["metadata"]["namespace"],
            "metadata.uid": pod["metadata"]["uid"],
            "spec.nodeName": pod["spec"].get("nodeName") or "",
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
        }.get(path, "")

    def _env(self, pod: dict, container: dict) -> dict[str, str]:
        ns = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for src in container.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if src.get("secretRef"):
                env.update({prefix + k: v for k, v in self._secret(ns, src["secretRef"]["name"]).items()})
            if src.get("configMapRef"):
                env.update({prefix + k: v for k, v in self._configmap(ns, src["configMapRef"]["name"]).items()})
        for e in container.get("env") or []:
            if "valueFrom" not in e:
                env[e["name"]] = e.get("value", "")
                continue
            vf = e["valueFrom"]
            if vf.get("secretKeyRef"):
                ref = vf["secretKeyRef"]
                env[e["name"]] = self._secret(ns, ref["name"]).get(ref["key"], "")
            elif vf.get("configMapKeyRef"):
                ref = vf["configMapKeyRef"]
                env[e["name"]] = self._configmap(ns, ref["name"]).get(ref["key"], "")
            elif vf.get("fieldRef"):
                env[e["name"]] = self._field(pod, vf["fieldRef"]["fieldPath"])
        return env

    def _volumes(self, pod: dict, container: dict) -> dict[str, pathlib.Path]:
        """mountPath -> local directory, created and filled as the kubelet would."""
        ns, pod_name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts: dict[str, pathlib.Path] = {}
        for m in container.get("volumeMounts") or []:
            v = volumes.get(m["name"], {})
            if v.get("persistentVolumeClaim"):
                claim = v["persistentVolumeClaim"]["claimName"]
                # Keyed by the claim's uid too: a PVC deleted and created again under the same
                # name is a new, empty volume, as on a cluster (raises 404 while it is missing,
                # and the Pod is retried on the next pass).
                uid = self.core.read_namespaced_persistent_volume_claim(claim, ns).metadata.uid
                local = self.root / ns / f"pvc-{claim}-{uid[:8]}"
            elif v.get("secret") or v.get("configMap"):
                local = self.root / ns / f"{pod_name}-{m['name']}"
                data = (self._secret(ns, v["secret"]["secretName"]) if v.get("secret")
                        else self._configmap(ns, v["configMap"]["name"]))
                shutil.rmtree(local, ignore_errors=True)
                local.mkdir(parents=True, mode=0o700)
                for key, value in data.items():
                    f = local / key
                    f.write_text(value)
                    f.chmod(0o600)
            else:
                local = self.root / ns / f"{pod_name}-{m['name']}"
            if m.get("subPath"):
                local = local / m["subPath"]
            local.mkdir(parents=True, exist_ok=True)
            mounts[m["mountPath"].rstrip("/") or "/"] = local
        return mounts

    @staticmethod
    def _rewrite(value: str, mounts: dict[str, pathlib.Path]) -> str:
        for path in sorted(mounts, key=len, reverse=True):
            if value == path or value.startswith(path + "/"):
                return str(mounts[path]) + value[len(path):]
            if value.startswith("--") and "=" in value:  # --data-dir=/var/lib/x
                flag, _, rest = value.partition("=")
                if rest == path or rest.startswith(path + "/"):
                    return f"{flag}={mounts[path]}{rest[len(path):]}"
        return value

    @staticmethod
    def _argv0(word: str) -> str:
        here = pathlib.Path(sys.executable).parent
        if word in ("python", "python3"):
            return sys.executable
        if (here / word).exists():
            return str(here / word)
        return shutil.which(word) or word

    # ---------------------------------------------------------------- processes

    def start(self, pod: dict, restarts: int = 0) -> Proc:
        meta, spec = pod["metadata"], pod["spec"]
        container = spec["containers"][0]
        argv = list(container.get("command") or []) + list(container.get("args") or [])
        if not argv:
            raise ValueError(f"pod {meta['namespace']}/{meta['name']}: its first container has no command")
        mounts = self._volumes(pod, container)
        env = {k: self._rewrite(v, mounts) for k, v in self._env(pod, container).items()}
        ports = {p["name"]: free_port() for p in container.get("ports") or [] if p.get("name")}
        env.update({f"STRATUS_PORT_{env_name(n)}": str(p) for n, p in ports.items()})
        env.update({f"STRATUS_MOUNT_{env_name(m['name'])}": str(mounts[m["mountPath"].rstrip("/") or "/"])
                    for m in container.get("volumeMounts") or []})
        termination = self._termination_file(meta["uid"])
        termination.unlink(missing_ok=True)
        env.update({"STRATUS_LOCAL_ENGINE": "1", "STRATUS_LISTEN_HOST": "127.0.0.1", "STRATUS_TERMINATION_LOG": str(termination),
                    "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
                    "HOME": os.environ.get("HOME", "/tmp"), "LANG": os.environ.get("LANG", "C.UTF-8")})
        for keep in ("JAVA_HOME", "STRATUS_CACHE", "TMPDIR"):
            if keep in os.environ and keep not in env:
                env[keep] = os.environ[keep]
        argv = [self._argv0(argv[0])] + [self._rewrite(a, mounts) for a in argv[1:]]
        cwd = self._rewrite(container["workingDir"], mounts) if container.get("workingDir") else str(self.root)
        logfile = self.root / "logs" / f"{meta['namespace']}_{meta['name']}.log"
        with open(logfile, "ab") as out:
            popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        p = Proc(meta["uid"], meta["namespace"], meta["name"], popen.pid, ports, time.time(), restarts, popen)
        self.procs[p.uid] = p
        self._state_file(p.uid).write_text(json.dumps(p.record()))
        log.info("started %s/%s: pid %s, ports %s, log %s", p.namespace, p.name, p.pid, ports, logfile)
        self._annotate(p, {PORTS_ANNOTATION: json.dumps(ports, sort_keys=True), PID_ANNOTATION: str(p.pid),
                           EXIT_ANNOTATION: None, TERMINATION_ANNOTATION: None})
        return p

    def stop(self, p: Proc, forget: bool = True) -> None:
        if p.alive():
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + STOP_GRACE
            while p.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            if p.alive():
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if p.popen is not None:
                p.popen.wait(5)
            log.info("stopped %s/%s (pid %s)", p.namespace, p.name, p.pid)
        if forget:
            self.procs.pop(p.uid, None)
            self._state_file(p.uid).unlink(missing_ok=True)
            self._termination_file(p.uid).unlink(missing_ok=True)

    def _annotate(self, p: Proc, annotations: dict[str, str | None]) -> None:
        try:
            self.core.patch_namespaced_pod(p.name, p.namespace, {"metadata": {"annotations": annotations}})
        except ApiException as exc:
            if exc.status != 404:
                log.warning("could not annotate %s/%s: %s %s", p.namespace, p.name, exc.status, exc.reason)

    # ---------------------------------------------------------------- the loop

    def wanted(self) -> dict[str, dict]:
        pods = self.core.list_pod_for_all_namespaces(label_selector=ENGINE_LABEL)
        out = {}
        for pod in pods.items:
            d = self.api.sanitize_for_serialization(pod)
            if d["metadata"].get("deletionTimestamp") or not d["spec"].get("nodeName"):
                continue
            if (d.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            out[d["metadata"]["uid"]] = d
        return out

    def sync_once(self) -> None:
        wanted = self.wanted()
        for uid, p in list(self.procs.items()):
            if uid not in wanted:
                self.stop(p)
        now = time.time()
        for uid, pod in wanted.items():
            p = self.procs.get(uid)
            if p is None:
                try:
                    self.start(pod)
                except (ApiException, OSError, ValueError, KeyError) as exc:
                    log.warning("cannot start %s/%s yet: %s", pod["metadata"]["namespace"], pod["metadata"]["name"], exc)
                continue
            if p.alive():
                continue
            if p.exit_code is None:
                p.exit_code = p.popen.returncode if p.popen is not None else -1
                p.next_start = now + min(30.0, 2.0 ** min(p.restarts, 5))
                log.info("%s/%s exited with %s", p.namespace, p.name, p.exit_code)
                try:
                    message = self._termination_file(uid).read_bytes()[-4096:].decode(errors="replace")
                except OSError:
                    message = None
                self._annotate(p, {EXIT_ANNOTATION: str(p.exit_code), TERMINATION_ANNOTATION: message})
            policy = pod["spec"].get("restartPolicy", "Always")
            if policy == "Always" or (policy == "OnFailure" and p.exit_code != 0):
                if now >= p.next_start:
                    self.procs.pop(uid, None)
                    self.start(pod, restarts=p.restarts + 1)

    def run(self, keep: bool = False) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    self.sync_once()
                except (ApiException, OSError, kubernetes.config.ConfigException) as exc:
                    log.warning("pod runner: %s; retrying", exc)
                except Exception:  # noqa: BLE001 - a dev loop must not die on one bad pod; the trace goes to its log
                    log.exception("pod runner pass failed; retrying")
                self.stopping.wait(POLL)
        finally:
            if not keep:
                for p in list(self.procs.values()):
                    self.stop(p)


def main(root: pathlib.Path, keep: bool = False) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s podrunner %(levelname)s %(message)s")
    kubernetes.config.load_kube_config()
    runner = PodRunner(root)
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: runner.stopping.set())
    runner.run(keep=keep)
