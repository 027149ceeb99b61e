"""Compute benchmark: N Servers, each with a Volume attached, created in one go against
the local control plane with the real operator, next to a baseline of the equivalent
VirtualMachines (and PVCs) created directly with kubectl in the same run.

Measured:
- wall time until every Server is ACTIVE with its Volume in-use (and, for the
  baseline, until every VMI runs with the volume reported Ready);
- the operator's CPU time (user+system) and peak resident memory (VmHWM), read from
  /proc for the operator process;
- API requests per Server: kube-apiserver's apiserver_request_total, before and after
  each phase, minus this script's own polling requests; the difference between the two
  phases is what the operator adds over the simulated KubeVirt/CSI (kwok) work;
- the operator's added latency per Server: for every object, the time from the batch
  submission to the first poll that sees it done; p50 and p99 of the Servers against
  the same for the baseline VMs.

Usage:
    .venv/bin/python benchmarks/compute/bench.py --count 100      # about 4 minutes on 2 shared cores
    .venv/bin/python benchmarks/compute/bench.py --count 300      # about 8 minutes
    .venv/bin/python benchmarks/compute/bench.py --count 1000     # the issue's figure; see the README for the extrapolation

Brings up its own cluster (`compute-bench`, deleted at the end unless --keep) with
enough simulated hypervisors for both phases, and writes results.md next to itself.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import yaml

HERE = pathlib.Path(__file__).resolve().parent
POLL = 1.0


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


class Cluster:
    def __init__(self, kubeconfig: str):
        from stratus.dev.cluster import kubectl_path

        self.kubeconfig = kubeconfig
        self.kubectl_bin = kubectl_path()
        self.polls = 0

    def kubectl(self, *args: str, input: str | None = None) -> str:
        res = subprocess.run([self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args], input=input,
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(res.stderr.strip())
        return res.stdout

    def apply(self, docs: list[dict]) -> None:
        for i in range(0, len(docs), 250):
            self.kubectl("apply", "--server-side", "-f", "-",
                         input=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": docs[i:i + 250]}))

    def list(self, resource: str, namespace: str) -> list[dict]:
        self.polls += 1
        return json.loads(self.kubectl("get", resource, "-n", namespace, "-o", "json"))["items"]

    def requests(self) -> dict[str, float]:
        """kube-apiserver's apiserver_request_total by "VERB resource[/subresource]"."""
        text = self.kubectl("get", "--raw", "/metrics")
        out: dict[str, float] = {}
        for m in re.finditer(r"^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$", text, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            key = f"{labels.get('verb', '?')} {labels.get('resource') or '(non-resource)'}"
            if labels.get("subresource"):
                key += "/" + labels["subresource"]
            out[key] = out.get(key, 0.0) + float(m.group(2))
        return out

    def requests_total(self) -> float:
        return sum(self.requests().values())


def added(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of a process and its children so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = 0
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return cpu, hwm


def wait_all(cluster: Cluster, resource: str, namespace: str, names: set[str], done, t0: float, timeout: float) -> dict[str, float]:
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(names) and time.monotonic() < deadline:
        now = time.monotonic()
        for obj in cluster.list(resource, namespace):
            name = obj["metadata"]["name"]
            if name in names and name not in seen and done(obj):
                seen[name] = now - t0
        if len(seen) < len(names):
            time.sleep(POLL)
    return seen


def baseline_docs(namespace: str, n: int) -> list[dict]:
    """What an operator-less user would write: a PVC and a VM with it hotplugged."""
    from stratus.core import compute, volumes
    from stratus.core.compute import DataVolumeDisk, FlavorSize

    size = FlavorSize(vcpus=1, ram_bytes=512 << 20, disk_bytes=1 << 30)
    docs = []
    for i in range(n):
        name = f"b-{i:04d}"
        fake_server = {"apiVersion": "stratus.dev/v1alpha1", "kind": "Server",
                       "metadata": {"name": name, "namespace": namespace, "uid": "00000000-0000-0000-0000-000000000000"},
                       "spec": {"flavor": "bench", "containerDisk": "quay.io/containerdisks/fedora:41"}}
        vol = {"apiVersion": "stratus.dev/v1alpha1", "kind": "Volume",
               "metadata": {"name": name, "namespace": namespace, "uid": "00000000-0000-0000-0000-000000000000"},
               "spec": {"size": "1Gi"}}
        pvc = volumes.volume_to_claim(vol, {"storageClassName": "standin-csi", "volumeMode": "Block"})
        vm = compute.server_to_virtual_machine(fake_server, size,
                                               volumes=[DataVolumeDisk(name, volumes.claim_name(name))])
        for d in (pvc, vm):
            d["metadata"].pop("ownerReferences", None)
            d["metadata"]["labels"] = {"bench": "baseline"}
        vm["spec"]["template"]["metadata"]["labels"] = {"bench": "baseline"}
        docs += [pvc, vm]
    return docs


def server_docs(namespace: str, n: int) -> list[dict]:
    docs = []
    for i in range(n):
        name = f"s-{i:04d}"
        docs.append({"apiVersion": "stratus.dev/v1alpha1", "kind": "Volume", "metadata": {"name": name, "namespace": namespace},
                     "spec": {"size": "1Gi", "volumeType": "bench", "attachTo": name}})
        docs.append({"apiVersion": "stratus.dev/v1alpha1", "kind": "Server", "metadata": {"name": name, "namespace": namespace},
                     "spec": {"flavor": "bench", "containerDisk": "quay.io/containerdisks/fedora:41"}})
    return docs


def vmi_done(obj: dict) -> bool:
    st = obj.get("status") or {}
    return st.get("phase") == "Running" and any(v.get("name", "").startswith("vol-") and v.get("phase") == "Ready"
                                                for v in st.get("volumeStatus") or [])


def server_done(obj: dict) -> bool:
    st = obj.get("status") or {}
    return st.get("phase") == "ACTIVE" and any(not v.get("boot") for v in st.get("volumes") or [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--cluster", default="compute-bench")
    parser.add_argument("--keep", action="store_true", help="keep the cluster afterwards")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    n = args.count

    from stratus.dev import cluster as devcluster
    from stratus.dev.run import free_port, operator_command

    nodes = max(4, (2 * n) // 200 + 2)
    kubeconfig = str(devcluster.up(args.cluster, nodes=nodes, shape=devcluster.HypervisorShape(cpu=256, memory="1Ti", pods=250),
                                   build=False))
    cluster = Cluster(kubeconfig)
    repo = HERE.parents[1]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(repo / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(repo / "crds"))
    cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "stratus"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-baseline"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-servers"}},
        {"apiVersion": "stratus.dev/v1alpha1", "kind": "Flavor", "metadata": {"name": "bench"},
         "spec": {"vcpus": 1, "ram": "512Mi", "disk": "1Gi"}},
        {"apiVersion": "stratus.dev/v1alpha1", "kind": "VolumeType", "metadata": {"name": "bench"},
         "spec": {"storageClassName": "standin-csi", "allowExpansion": True}},
    ]))
    results: dict = {"count": n, "nodes": nodes}
    op = None
    log_path = pathlib.Path(tempfile.gettempdir()) / "stratus-compute-bench-operator.log"
    log = open(log_path, "wb")
    print(f"operator log: {log_path}", file=sys.stderr)
    try:
        # Baseline: VMs and PVCs straight from kubectl, no operator running.
        docs = baseline_docs("bench-baseline", n)
        by0 = cluster.requests()
        r0 = sum(by0.values())
        polls0 = cluster.polls
        t0 = time.monotonic()
        cluster.apply(docs)
        seen = wait_all(cluster, "virtualmachineinstances", "bench-baseline", {f"b-{i:04d}" for i in range(n)}, vmi_done, t0,
                        args.timeout)
        by1 = cluster.requests()
        results["baseline"] = {"done": len(seen), "wall": max(seen.values(), default=float("nan")),
                               "p50": percentile(list(seen.values()), 0.5), "p99": percentile(list(seen.values()), 0.99),
                               "requests": sum(by1.values()) - r0 - (cluster.polls - polls0) - 1,
                               "by": _own_polls_out(added(by1, by0), "virtualmachineinstances", cluster.polls - polls0)}
        cluster.kubectl("delete", "namespace", "bench-baseline", "--wait=false")
        # Stratus: Servers and Volumes, the operator running for real.
        env = {**os.environ, "KUBECONFIG": kubeconfig, "STRATUS_METRICS_PORT": "0"}
        op = subprocess.Popen(operator_command(free_port()), env=env, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)
        time.sleep(8)  # startup: CRD discovery, peering, resume of nothing
        cpu0, _ = proc_stats(op.pid)
        by0 = cluster.requests()
        r0 = sum(by0.values())
        polls0 = cluster.polls
        t0 = time.monotonic()
        cluster.apply(server_docs("bench-servers", n))
        seen = wait_all(cluster, "servers.stratus.dev", "bench-servers", {f"s-{i:04d}" for i in range(n)}, server_done, t0,
                        args.timeout)
        cpu1, hwm = proc_stats(op.pid)
        by1 = cluster.requests()
        results["stratus"] = {"done": len(seen), "wall": max(seen.values(), default=float("nan")),
                              "p50": percentile(list(seen.values()), 0.5), "p99": percentile(list(seen.values()), 0.99),
                              "requests": sum(by1.values()) - r0 - (cluster.polls - polls0) - 1,
                              "by": _own_polls_out(added(by1, by0), "servers", cluster.polls - polls0),
                              "cpu": cpu1 - cpu0, "peak_rss": hwm}
    finally:
        if op and op.poll() is None:
            op.terminate()
            try:
                op.wait(30)
            except subprocess.TimeoutExpired:
                op.kill()
        if not args.keep:
            devcluster.down(args.cluster)
    write(results)


def _own_polls_out(by: dict[str, float], resource: str, polls: int) -> dict[str, float]:
    """Without this script's polling LISTs and its one scrape of /metrics."""
    by = dict(by)
    by[f"LIST {resource}"] = by.get(f"LIST {resource}", 0.0) - polls
    by["GET (non-resource)"] = by.get("GET (non-resource)", 0.0) - 1
    return {k: v for k, v in by.items() if v > 0}


def write(r: dict) -> None:
    b, s, n = r["baseline"], r["stratus"], r["count"]
    lines = [
        f"# Compute benchmark: {n} Servers with a Volume each ({r['nodes']} simulated hypervisors, 2 shared cores)",
        "",
        "| | baseline: VMs + PVCs by kubectl | Stratus: Servers + Volumes | added by Stratus |",
        "|---|---|---|---|",
        f"| done | {b['done']}/{n} | {s['done']}/{n} | |",
        f"| time to all running / ACTIVE | {b['wall']:.1f} s | {s['wall']:.1f} s | {s['wall'] - b['wall']:+.1f} s |",
        f"| latency p50 from submission | {b['p50']:.1f} s | {s['p50']:.1f} s | {s['p50'] - b['p50']:+.1f} s |",
        f"| latency p99 from submission | {b['p99']:.1f} s | {s['p99']:.1f} s | {s['p99'] - b['p99']:+.1f} s |",
        f"| API requests per object pair | {b['requests'] / n:.1f} | {s['requests'] / n:.1f} | {(s['requests'] - b['requests']) / n:+.1f} |",
        f"| operator CPU time | | {s['cpu']:.1f} s ({s['cpu'] / n * 1000:.0f} ms per Server) | |",
        f"| operator peak RSS | | {s['peak_rss'] / (1 << 20):.0f} MiB | |",
        "",
        "API requests include the simulated KubeVirt/CSI (kwok) work, the same in both columns, "
        "and exclude this script's polling.",
        "",
        "Where the requests go (per object pair, the 15 largest differences):",
        "",
        "| request | baseline | Stratus | added |",
        "|---|---:|---:|---:|",
    ]
    keys = set(b.get("by", {})) | set(s.get("by", {}))
    diff = {k: s.get("by", {}).get(k, 0.0) - b.get("by", {}).get(k, 0.0) for k in keys}
    for k in sorted(keys, key=lambda k: -abs(diff[k]))[:15]:
        lines.append(f"| {k} | {b.get('by', {}).get(k, 0.0) / n:.1f} | {s.get('by', {}).get(k, 0.0) / n:.1f} | "
                     f"{diff[k] / n:+.1f} |")
    text = "\n".join(lines) + "\n"
    (HERE / "results.md").write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
