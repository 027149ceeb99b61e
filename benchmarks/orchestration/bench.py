"""Orchestration benchmark: a Stack whose ResourceGroup makes N Servers, each with a
Volume and a VolumeAttachment (a nested template), against the same Servers and Volumes
applied with kubectl (the baseline: what a user writes without Heat, volumes carrying
attachTo), both with the real operator on the local control plane.

Measured, for each side:
- create: wall time until every Server is ACTIVE with its volume attached (for the
  Stack, until CREATE_COMPLETE); API requests (kube-apiserver's apiserver_request_total,
  minus this script's polling); the operator's CPU time;
- update: every Server's flavor changed (one stack parameter vs. N kubectl patches),
  wall time until every Server reports the new flavor (UPDATE_COMPLETE);
- delete: wall time until every Server and Volume is gone.
And, without a cluster, template validation time of the generated N-member template.

Usage:
    .venv/bin/python benchmarks/orchestration/bench.py --count 100
    .venv/bin/python benchmarks/orchestration/bench.py --validate-only

Brings up its own cluster (`orchestration-bench`, deleted unless --keep) and writes
results.md next to itself.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import timeit

import yaml

HERE = pathlib.Path(__file__).resolve().parent

def _compute_bench():
    """The compute benchmark's helpers (Cluster, proc_stats), loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compute_bench", HERE.parent / "compute" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_compute = _compute_bench()
Cluster, proc_stats = _compute.Cluster, _compute.proc_stats

POLL = 1.0

#: One stack member: a blank boot volume, a data volume, a server booting from the first
#: and the second attached (the bench cluster has no Image; the stand-ins boot blank volumes).
MEMBER = {"heat_template_version": "2016-10-14",
          "parameters": {"flavor": {"type": "string"}, "index": {"type": "string"}},
          "resources": {
              "boot": {"type": "OS::Cinder::Volume", "properties": {"size": 1, "volume_type": "bench"}},
              "data": {"type": "OS::Cinder::Volume", "properties": {"size": 1, "volume_type": "bench"}},
              "server": {"type": "OS::Nova::Server", "properties": {
                  "flavor": {"get_param": "flavor"},
                  "block_device_mapping": [{"device_name": "vda", "volume_id": {"get_resource": "boot"}}]}},
              "attach": {"type": "OS::Cinder::VolumeAttachment", "properties": {
                  "instance_uuid": {"get_resource": "server"}, "volume_id": {"get_resource": "data"}}},
          },
          "outputs": {"address": {"value": {"get_attr": ["server", "first_address"]}}}}


def template(n: int) -> str:
    return yaml.safe_dump({
        "heat_template_version": "2016-10-14",
        "parameters": {"flavor": {"type": "string", "constraints": [{"custom_constraint": "nova.flavor"}]},
                       "count": {"type": "number", "default": n}},
        "resources": {"servers": {"type": "OS::Heat::ResourceGroup", "properties": {
            "count": {"get_param": "count"},
            "resource_def": {"type": "member.yaml", "properties": {"flavor": {"get_param": "flavor"}, "index": "%index%"}}}}},
        "outputs": {"addresses": {"value": {"get_attr": ["servers", "address"]}}}})


def validation_times(n: int) -> list[tuple[str, int, float]]:
    from stratus.core.heat import Stack

    rows = []
    big = template(n)
    member = yaml.safe_dump(MEMBER)
    runs = 3
    t = timeit.timeit(lambda: Stack(big, files={"member.yaml": member}, parameters={"flavor": "bench"},
                                    catalog={"nova.flavor": {"bench"}}), number=runs) / runs
    rows.append((f"generated ResourceGroup of {n} (server + volume + attachment each)", len(big.splitlines()), t))
    return rows


def wait(predicate, timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        time.sleep(POLL)
    return None


def servers_state(cluster: Cluster, ns: str) -> tuple[list[dict], list[dict]]:
    return cluster.list("servers.stratus.dev", ns), cluster.list("volumes.stratus.dev", ns)


def all_active(cluster: Cluster, ns: str, n: int, flavor: str) -> bool:
    servers, vols = servers_state(cluster, ns)
    ok = [s for s in servers if (s.get("status") or {}).get("phase") == "ACTIVE" and s["spec"]["flavor"] == flavor
          and s["status"].get("observedGeneration") == s["metadata"]["generation"]]
    attached = [v for v in vols if ((v.get("status") or {}).get("attachment") or {}).get("server")
                and not v["status"]["attachment"].get("boot")]
    return len(ok) == n and len(attached) == n


def stack_phase(cluster: Cluster, ns: str, phase: str) -> bool:
    cluster.polls += 1
    obj = json.loads(cluster.kubectl("get", "stacks.stratus.dev", "bench", "-n", ns, "-o", "json"))
    st = obj.get("status") or {}
    if st.get("phase", "").endswith("FAILED"):
        raise RuntimeError(f"stack {st['phase']}: {st.get('stackStatusReason')}")
    return st.get("phase") == phase and st.get("observedGeneration") == obj["metadata"]["generation"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--cluster", default="orchestration-bench")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--validate-only", action="store_true")
    args = parser.parse_args()
    n = args.count
    results: dict = {"count": n, "validation": validation_times(n)}
    if args.validate_only:
        return write(results)

    from stratus.dev import cluster as devcluster
    from stratus.dev.run import free_port, operator_command

    nodes = max(4, (2 * n) // 200 + 2)
    kubeconfig = str(devcluster.up(args.cluster, nodes=nodes, shape=devcluster.HypervisorShape(cpu=256, memory="1Ti", pods=250),
                                   build=False))
    cluster = Cluster(kubeconfig)
    repo = HERE.parents[1]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(repo / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(repo / "crds"))
    base = [{"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "stratus"}},
            {"apiVersion": "stratus.dev/v1alpha1", "kind": "Flavor", "metadata": {"name": "bench"}, "spec": {"vcpus": 1, "ram": "512Mi"}},
            {"apiVersion": "stratus.dev/v1alpha1", "kind": "Flavor", "metadata": {"name": "bench2"}, "spec": {"vcpus": 1, "ram": "1Gi"}},
            {"apiVersion": "stratus.dev/v1alpha1", "kind": "VolumeType", "metadata": {"name": "bench"},
             "spec": {"storageClassName": "standin-csi", "allowExpansion": True}}]
    for ns in ("bench-kubectl", "bench-stack"):
        base.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(base))
    log_path = pathlib.Path(tempfile.gettempdir()) / "stratus-orchestration-bench-operator.log"
    env = {**os.environ, "KUBECONFIG": kubeconfig, "STRATUS_METRICS_PORT": "0"}
    op = subprocess.Popen(operator_command(free_port()), env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, start_new_session=True)
    print(f"operator log: {log_path}", file=sys.stderr)
    try:
        time.sleep(8)
        results["kubectl"] = run_kubectl(cluster, op, n, args.timeout)
        write(results)  # partial results survive an interrupted run
        results["stack"] = run_stack(cluster, op, n, args.timeout)
    finally:
        if op.poll() is None:
            op.terminate()
            try:
                op.wait(30)
            except subprocess.TimeoutExpired:
                op.kill()
        if not args.keep:
            devcluster.down(args.cluster)
    write(results)


def measure(cluster: Cluster, op, action, done, timeout: float) -> dict:
    cpu0, _ = proc_stats(op.pid)
    r0, p0 = cluster.requests_total(), cluster.polls
    t0 = time.monotonic()
    action()
    wall = wait(done, timeout)
    cpu1, _ = proc_stats(op.pid)
    return {"wall": wall if wall is None else time.monotonic() - t0, "requests": cluster.requests_total() - r0 - (cluster.polls - p0) - 1,
            "cpu": cpu1 - cpu0}


def kubectl_docs(ns: str, n: int, flavor: str) -> list[dict]:
    docs = []
    for i in range(n):
        name = f"k-{i:04d}"
        docs.append({"apiVersion": "stratus.dev/v1alpha1", "kind": "Volume", "metadata": {"name": f"{name}-boot", "namespace": ns},
                     "spec": {"size": "1Gi", "volumeType": "bench"}})
        docs.append({"apiVersion": "stratus.dev/v1alpha1", "kind": "Volume", "metadata": {"name": name, "namespace": ns},
                     "spec": {"size": "1Gi", "volumeType": "bench", "attachTo": name}})
        docs.append({"apiVersion": "stratus.dev/v1alpha1", "kind": "Server", "metadata": {"name": name, "namespace": ns},
                     "spec": {"flavor": flavor, "bootVolume": f"{name}-boot"}})
    return docs


def run_kubectl(cluster: Cluster, op, n: int, timeout: float) -> dict:
    ns = "bench-kubectl"
    out = {"create": measure(cluster, op, lambda: cluster.apply(kubectl_docs(ns, n, "bench")),
                             lambda: all_active(cluster, ns, n, "bench"), timeout)}
    out["update"] = measure(cluster, op, lambda: cluster.apply([d for d in kubectl_docs(ns, n, "bench2") if d["kind"] == "Server"]),
                            lambda: all_active(cluster, ns, n, "bench2"), timeout)
    out["delete"] = measure(cluster, op, lambda: cluster.kubectl("delete", "servers.stratus.dev,volumes.stratus.dev", "--all", "-n", ns,
                                                                 "--wait=false"),
                            lambda: servers_state(cluster, ns) == ([], []), timeout)
    return out


def run_stack(cluster: Cluster, op, n: int, timeout: float) -> dict:
    ns = "bench-stack"
    body = {"apiVersion": "stratus.dev/v1alpha1", "kind": "Stack", "metadata": {"name": "bench", "namespace": ns},
            "spec": {"template": template(n), "files": {"member.yaml": yaml.safe_dump(MEMBER)}, "parameters": {"flavor": "bench"},
                     "timeoutMinutes": 120}}
    out = {"create": measure(cluster, op, lambda: cluster.apply([body]), lambda: stack_phase(cluster, ns, "CREATE_COMPLETE"), timeout)}
    patch = json.dumps({"spec": {"parameters": {"flavor": "bench2"}}})
    out["update"] = measure(cluster, op, lambda: cluster.kubectl("patch", "stacks.stratus.dev", "bench", "-n", ns, "--type=merge",
                                                                 "-p", patch),
                            lambda: stack_phase(cluster, ns, "UPDATE_COMPLETE"), timeout)
    out["delete"] = measure(cluster, op, lambda: cluster.kubectl("delete", "stacks.stratus.dev", "bench", "-n", ns, "--wait=false"),
                            lambda: servers_state(cluster, ns) == ([], []), timeout)
    return out


def write(r: dict) -> None:
    n = r["count"]
    lines = [f"# Orchestration benchmark ({n} Servers, each with a Volume attached; 2 shared cores)", ""]
    if "kubectl" in r:
        k, s = r["kubectl"], r.get("stack") or {p: {"wall": None} for p in ("create", "update", "delete")}
        lines += ["| phase | kubectl (Servers + Volumes with attachTo) | Stack (ResourceGroup of a nested template) |",
                  "|---|---|---|"]
        for phase in ("create", "update", "delete"):
            def cell(x):
                return (f"{x['wall']:.1f} s, {x['requests'] / n:.1f} requests/server, operator CPU {x['cpu']:.1f} s"
                        if x["wall"] is not None else "not measured")
            lines.append(f"| {phase} | {cell(k[phase])} | {cell(s[phase])} |")
        lines += ["", "Both sides make the same objects per server: a blank boot Volume, a data Volume attached, the "
                  "Server (the bench cluster has no Image). kubectl applies them all at once (the Volume controller "
                  "waits for its Server by itself); the Stack creates them in dependency order. Requests exclude this "
                  "script's polling and include the simulated KubeVirt/CSI work.", ""]
    lines += ["Template validation (parse, parameters, every intrinsic, the graph, the builders on placeholders), "
              "no cluster:", "", "| template | lines | time |", "|---|---:|---:|"]
    for name, size, t in r["validation"]:
        lines.append(f"| {name} | {size} | {t * 1000:.1f} ms |")
    text = "\n".join(lines) + "\n"
    (HERE / "results.md").write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
