"""Identity benchmark: many projects at once, and how fast a policy rule takes hold.

Run from the project root (the local control plane binaries must be built):

    .venv/bin/python benchmarks/identity/bench.py              # 200 projects, writes results.md
    .venv/bin/python benchmarks/identity/bench.py --quick      # 20 projects, prints only

What is measured, against the real API server with the real operator as a subprocess:

* **Projects**: N Projects with 5 members each (and a quota) created in one go from
  8 client threads; the time until every one is Active/Ready, the time to delete them
  all, and the operator's peak resident memory (VmHWM) over the run. Baseline, side by
  side: the same children (Namespace, three RoleBindings... exactly what
  `core.identity` builds) written straight to the API server by the benchmark itself,
  without an operator: the cost of the API writes alone.
* **Policy latency**: a PolicyRule is created (or deleted) and a member's dry-run
  Server create is polled every 50 ms until the API server refuses (or admits) it.
  Baseline: the same ValidatingAdmissionPolicy and binding applied directly, which is
  the API server's own propagation delay, so the difference is the operator's share.

The benchmark uses its own cluster (`identity-bench`, deleted afterwards unless --keep)
or the one KUBECONFIG names.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import kubernetes
from kubernetes.client.rest import ApiException

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "operator"))

from stratus.dev import cluster as devcluster, run as devrun  # noqa: E402
from stratus.core import identity, policy  # noqa: E402

G, V = "stratus.dev", "v1alpha1"
THREADS = 8


def kubectl(kubeconfig: str, *args: str) -> None:
    subprocess.run([devcluster.kubectl_path(), "--kubeconfig", kubeconfig, *args], check=True, capture_output=True)


class Bench:
    def __init__(self, kubeconfig: str):
        self.kubeconfig = kubeconfig
        self.api = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(self.api)
        self.adm = kubernetes.client.AdmissionregistrationV1Api(self.api)
        self.op: subprocess.Popen | None = None
        self.peak_kib = 0

    # The operator -----------------------------------------------------------------------
    def start_operator(self, log: pathlib.Path) -> None:
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        self.op = subprocess.Popen(devrun.operator_command(devrun.free_port()), env=env, stdout=open(log, "wb"),
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        time.sleep(3)

    def sample_memory(self) -> int:
        """The operator's peak RSS so far (KiB), from the kernel's high-water mark."""
        if self.op and self.op.poll() is None:
            for line in pathlib.Path(f"/proc/{self.op.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_kib = max(self.peak_kib, int(line.split()[1]))
        return self.peak_kib

    def stop_operator(self) -> None:
        if self.op and self.op.poll() is None:
            self.sample_memory()
            os.killpg(self.op.pid, 15)
            try:
                self.op.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.op.pid, 9)
                self.op.wait(10)

    # Projects ---------------------------------------------------------------------------
    def project_body(self, name: str) -> dict:
        members = [{"name": f"user{i}@{name}.example.org", "role": ("admin", "member", "member", "member", "reader")[i]}
                   for i in range(5)]
        return {"apiVersion": f"{G}/{V}", "kind": "Project", "metadata": {"name": name, "labels": {"bench": "identity"}},
                "spec": {"members": members, "quota": {"servers": 10, "vcpus": 32, "memory": "64Gi"}}}

    def projects_with_operator(self, n: int, timeout: float) -> dict:
        names = [f"bench-{uuid.uuid4().hex[:6]}-{i:03d}" for i in range(n)]
        start = time.monotonic()
        with cf.ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda nm: self.custom.create_cluster_custom_object(G, V, "projects", self.project_body(nm)), names))
        created = time.monotonic() - start
        ready = 0
        deadline = start + timeout
        while time.monotonic() < deadline:
            self.sample_memory()
            items = self.custom.list_cluster_custom_object(G, V, "projects", label_selector="bench=identity")["items"]
            ready = sum(1 for p in items if (p.get("status") or {}).get("phase") == "Active")
            if ready >= n:
                break
            time.sleep(0.5)
        all_ready = time.monotonic() - start
        # Every project's children really exist.
        rbs = self.rbac.list_role_binding_for_all_namespaces(label_selector=identity.PROJECT_LABEL).items
        rbs = [rb for rb in rbs if rb.metadata.namespace in set(names)]
        start = time.monotonic()
        with cf.ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda nm: self.custom.delete_cluster_custom_object(G, V, "projects", nm), names))
        while time.monotonic() - start < timeout:
            self.sample_memory()
            if not self.custom.list_cluster_custom_object(G, V, "projects", label_selector="bench=identity")["items"]:
                break
            time.sleep(0.5)
        deleted = time.monotonic() - start
        return {"n": n, "create_calls_s": created, "all_ready_s": all_ready, "ready": ready, "rolebindings": len(rbs),
                "deleted_s": deleted, "peak_mib": self.sample_memory() / 1024}

    def projects_direct(self, n: int) -> dict:
        """Baseline: the same children, written by the benchmark itself."""
        names = [f"base-{uuid.uuid4().hex[:6]}-{i:03d}" for i in range(n)]
        owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "none", "uid": "none"}

        def write(name: str) -> None:
            spec = self.project_body(name)["spec"]
            ns = identity.namespace_object(name, name, owner, spec["quota"])
            ns["metadata"].pop("ownerReferences")
            self.core.create_namespace(ns)
            wanted, _ = identity.role_bindings(name, name, spec["members"], True, owner)
            for rb in wanted:
                rb["metadata"].pop("ownerReferences")
                self.rbac.create_namespaced_role_binding(name, rb)
            rq = identity.resource_quota(name, name, owner, spec["quota"])
            rq["metadata"].pop("ownerReferences")
            self.core.create_namespaced_resource_quota(name, rq)

        start = time.monotonic()
        with cf.ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(write, names))
        took = time.monotonic() - start
        self.baseline_namespaces = names  # deleted at the very end: not to slow the measured deletion
        return {"n": n, "all_written_s": took}

    def delete_baseline(self) -> None:
        with cf.ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(self.core.delete_namespace, getattr(self, "baseline_namespaces", [])))

    # Policy latency ---------------------------------------------------------------------
    def member_client(self, user: str):
        api = kubernetes.config.new_client_from_config(config_file=self.kubeconfig)
        api.set_default_header("Impersonate-User", user)
        return kubernetes.client.CustomObjectsApi(api)

    def admitted(self, client, ns: str, flavor: str) -> bool:
        body = {"apiVersion": f"{G}/{V}", "kind": "Server", "metadata": {"name": "probe"},
                "spec": {"flavor": flavor, "containerDisk": "quay.io/containerdisks/fedora:41"}}
        try:
            client.create_namespaced_custom_object(G, V, ns, "servers", body, dry_run="All")
            return True
        except ApiException as exc:
            if exc.status in (403, 422):
                return False
            raise

    def until(self, predicate, timeout: float = 60) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if predicate():
                return time.monotonic() - start
            time.sleep(0.05)
        raise RuntimeError("timed out")

    def policy_latency(self, rounds: int) -> dict:
        name = f"bench-pol-{uuid.uuid4().hex[:6]}"
        user = f"member@{name}"
        body = self.project_body(name)
        body["spec"]["members"] = [{"name": user, "role": "member"}]
        self.custom.create_cluster_custom_object(G, V, "projects", body)
        big = f"bench-big-{uuid.uuid4().hex[:6]}"
        self.custom.create_cluster_custom_object(G, V, "flavors", {"apiVersion": f"{G}/{V}", "kind": "Flavor",
                                                                   "metadata": {"name": big}, "spec": {"vcpus": 16, "ram": "32Gi"}})
        client = self.member_client(user)
        self.until(lambda: self.admitted(client, name, big), 60)
        spec = {"template": {"name": "MaxFlavor", "maxVcpus": 4}, "message": "too big"}
        out = {"rule_on": [], "rule_off": [], "vap_on": [], "vap_off": []}
        for _ in range(rounds):
            rule = {"apiVersion": f"{G}/{V}", "kind": "PolicyRule", "metadata": {"name": "no-big"}, "spec": spec}
            start = time.monotonic()
            self.custom.create_namespaced_custom_object(G, V, name, "policyrules", rule)
            self.until(lambda: not self.admitted(client, name, big))
            out["rule_on"].append(time.monotonic() - start)
            start = time.monotonic()
            self.custom.delete_namespaced_custom_object(G, V, name, "policyrules", "no-big")
            self.until(lambda: self.admitted(client, name, big))
            out["rule_off"].append(time.monotonic() - start)
            self.until(lambda: self._gone(name), 30)
            # Baseline: the compiled policy applied directly.
            vap, binding, _ = policy.compile_rule(spec, "direct", name, [{"metadata": {"name": "x"}, "spec": {"vcpus": 1, "ram": "1Gi"}}])
            start = time.monotonic()
            self.adm.create_validating_admission_policy(vap)
            self.adm.create_validating_admission_policy_binding(binding)
            self.until(lambda: not self.admitted(client, name, big))
            out["vap_on"].append(time.monotonic() - start)
            start = time.monotonic()
            self.adm.delete_validating_admission_policy_binding(binding["metadata"]["name"])
            self.adm.delete_validating_admission_policy(vap["metadata"]["name"])
            self.until(lambda: self.admitted(client, name, big))
            out["vap_off"].append(time.monotonic() - start)
        self.custom.delete_cluster_custom_object(G, V, "projects", name)
        self.custom.delete_cluster_custom_object(G, V, "flavors", big)
        return out

    def _gone(self, ns: str) -> bool:
        try:
            self.custom.get_namespaced_custom_object(G, V, ns, "policyrules", "no-big")
            return False
        except ApiException as exc:
            return exc.status == 404


def fmt(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f} s, max {max(xs):.2f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--projects", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="20 projects, 2 rounds, print only")
    ap.add_argument("--cluster", default="identity-bench")
    ap.add_argument("--keep", action="store_true", help="Keep the cluster afterwards.")
    args = ap.parse_args()
    if args.quick:
        args.projects, args.rounds = 20, 2
    own_cluster = not os.environ.get("KUBECONFIG")
    kubeconfig = os.environ.get("KUBECONFIG") or str(devcluster.up(args.cluster, nodes=2, build=False))
    bench = Bench(kubeconfig)
    try:
        kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds"))
        kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "charts/stratus/templates/roles.yaml"))
        baseline = bench.projects_direct(args.projects)
        bench.start_operator(pathlib.Path(tempfile.mkdtemp(prefix="identity-bench-")) / "operator.log")
        projects = bench.projects_with_operator(args.projects, timeout=900)
        latency = bench.policy_latency(args.rounds)
    finally:
        bench.stop_operator()
        bench.delete_baseline()
        if own_cluster and not args.keep:
            devcluster.down(args.cluster)
    lines = [
        "# Identity benchmark results",
        "",
        f"{os.cpu_count()} shared cores, {platform.python_implementation()} {platform.python_version()}, {time.strftime('%Y-%m-%d')}; "
        f"`benchmarks/identity/bench.py{' --quick' if args.quick else ''}`.",
        "",
        f"## {projects['n']} projects with 5 members each, created in one go ({THREADS} client threads)",
        "",
        "| | seconds |",
        "|---|---|",
        f"| baseline: the same Namespaces, RoleBindings and ResourceQuotas written directly | {baseline['all_written_s']:.1f} |",
        f"| Project create calls returned | {projects['create_calls_s']:.1f} |",
        f"| all Projects Active (operator) | {projects['all_ready_s']:.1f} ({projects['ready']}/{projects['n']} Active, "
        f"{projects['rolebindings']} RoleBindings) |",
        f"| all Projects deleted, namespaces included (ordered deletion) | {projects['deleted_s']:.1f} |",
        "",
        "Deletion is bounded by kube-controller-manager's namespace controller (a discovery and a",
        "list/delete per served resource type for each namespace, at its default client rate limit),",
        "not by the operator: the operator's part (RoleBindings, Stratus objects) is done in the first seconds.",
        "",
        f"Operator peak resident memory (VmHWM) over the run: **{projects['peak_mib']:.0f} MiB**.",
        "",
        f"## Policy-rule change until the API server enforces it ({args.rounds} rounds)",
        "",
        "| change | PolicyRule (operator) | baseline: VAP + binding applied directly |",
        "|---|---|---|",
        f"| rule added -> request refused | {fmt(latency['rule_on'])} | {fmt(latency['vap_on'])} |",
        f"| rule deleted -> request admitted | {fmt(latency['rule_off'])} | {fmt(latency['vap_off'])} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        (HERE / "results.md").write_text(text)
    return 0 if projects["ready"] == projects["n"] else 1


if __name__ == "__main__":
    sys.exit(main())
