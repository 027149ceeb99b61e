"""Power 100 simulated BMCs on and off in one go: the operator against an ipmitool loop.

    .venv/bin/python benchmarks/baremetal/bench.py               # 100 BMCs, writes benchmarks/baremetal/results.md
    .venv/bin/python benchmarks/baremetal/bench.py --count 10 --no-write   # a smoke run
    .venv/bin/python benchmarks/baremetal/bench.py --driver-only           # the driver alone, printed

Everything runs in one go on this machine: N `ipmi_sim` BMCs on loopback (hack/bmcsim),
then three ways of powering all of them on and then off, each timed until every power
state is confirmed:

1. **ipmitool loop** (the baseline an administrator would script): for each node in turn,
   `ipmitool chassis power on`, then `chassis power status` per node until all read "on";
   likewise off.
2. **driver** (`stratus.drivers.ipmi`, in this process): all nodes at once through one
   bounded executor (``STRATUS_IPMI_CONCURRENCY`` threads), waiting for the BMC to confirm.
3. **operator**: the real operator on a local control plane with N BareMetalNodes
   (enrolled with ``inspect: false``), `spec.online` patched on all of them at once,
   timed until every node's `status.poweredOn` (read from the BMC) and the simulator
   agree. Its peak memory is the operator process's VmHWM.

IPMI datagrams per node are counted where pyghmi sends them (a wrapper around pyghmi's
send function; for the operator, `counting_operator.py` runs `stratus operator` with
it), so retransmits count too; one IPMI round trip is one datagram out and one back.
ipmitool's packets cannot be counted from outside without a packet capture; its cost is
given as processes and sessions (each invocation opens an RMCP+ session: four round trips
before the command).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib.util
import json
import os
import pathlib
import resource
import signal
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "operator"))

CLUSTER = os.environ.get("STRATUS_BENCH_CLUSTER", "baremetal-bench")


def load_bmcsim():
    spec = importlib.util.spec_from_file_location("bmcsim", REPO / "hack" / "bmcsim" / "bmcsim.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bmcsim"] = module
    spec.loader.exec_module(module)
    return module


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    raise SystemExit(f"bench: timed out after {timeout:.0f}s waiting for {what}")


# ---------------------------------------------------------------------------------- ipmitool


def ipmitool_loop(fleet, want: bool) -> dict:
    word = "on" if want else "off"
    started = time.monotonic()
    calls = 0
    for sim in fleet:
        sim.ipmitool("chassis", "power", word)
        calls += 1
    pending = list(fleet)
    while pending:
        still = []
        for sim in pending:
            out = sim.ipmitool("chassis", "power", "status")
            calls += 1
            if not out.strip().endswith(word):
                still.append(sim)
        pending = still
    elapsed = time.monotonic() - started
    assert all(sim.power == want for sim in fleet)
    return {"seconds": elapsed, "calls_per_node": calls / len(fleet)}


# ---------------------------------------------------------------------------------- driver


def driver_run(fleet, want: bool, concurrency: int) -> dict:
    from pyghmi.ipmi.private import session

    from stratus.drivers import ipmi

    counts: collections.Counter = collections.Counter()
    original = session._io_sendto

    def counted(sock, packet, sockaddr):
        counts[sockaddr[1]] += 1
        return original(sock, packet, sockaddr)

    session._io_sendto = counted
    executor = ipmi.IpmiExecutor(max_concurrency=concurrency)
    try:
        clients = [ipmi.IpmiClient(ipmi.parse_address(s.address), ipmi.BmcCredentials(s.username, s.password), executor=executor)
                   for s in fleet]

        async def go():
            calls = [c.power_on(wait=30) if want else c.power_off(wait=30) for c in clients]
            return await asyncio.gather(*calls)

        started = time.monotonic()
        states = asyncio.run(go())
        elapsed = time.monotonic() - started
    finally:
        session._io_sendto = original
        executor.shutdown()
    assert all((s == ipmi.PowerState.ON) == want for s in states)
    assert all(sim.power == want for sim in fleet)
    return {"seconds": elapsed, "datagrams_per_node": sum(counts.values()) / len(fleet), "peak_threads": executor.peak_threads}


# ---------------------------------------------------------------------------------- operator


class OperatorRun:
    def __init__(self, fleet, workdir: pathlib.Path):
        from stratus.dev import cluster as devcluster, run as devrun

        self.fleet = fleet
        self.workdir = workdir
        self.kubeconfig = str(devcluster.up(CLUSTER, nodes=1, build=False))
        devrun.install_crds(CLUSTER)
        import kubernetes

        api = kubernetes.config.new_client_from_config(config_file=self.kubeconfig)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.core = kubernetes.client.CoreV1Api(api)
        self.counts_file = workdir / "counts.json"
        self.log = open(workdir / "operator.log", "wb")
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "STRATUS_METRICS_PORT": "0",
               "STRATUS_BOOTSERVER_HTTP_PORT": str(devrun.free_port()),
               "STRATUS_BAREMETAL_POWER_POLL": "60", "STRATUS_BAREMETAL_POLL_INTERVAL": "2",
               "STRATUS_LEDGER_DIR": str(workdir / "ledger")}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "counting_operator.py"), str(self.counts_file), "operator", "--log-format", "plain",
             "--health-port", str(devrun.free_port())],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.ns = "bench-baremetal"
        self.names = [f"bench-bm{i:03d}" for i in range(len(fleet))]

    def counts(self) -> int:
        try:
            return sum(json.loads(self.counts_file.read_text()).values())
        except (FileNotFoundError, ValueError):
            return 0

    def peak_rss_mib(self) -> float:
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def statuses(self) -> dict:
        items = self.custom.list_cluster_custom_object("stratus.dev", "v1alpha1", "baremetalnodes")["items"]
        return {o["metadata"]["name"]: o.get("status") or {} for o in items if o["metadata"]["name"] in self.names}

    def enroll(self) -> float:
        from kubernetes.client.rest import ApiException

        try:
            self.core.create_namespace({"metadata": {"name": self.ns}})
        except ApiException as exc:
            if exc.status != 409:
                raise
        started = time.monotonic()
        for name, sim in zip(self.names, self.fleet):
            self.core.create_namespaced_secret(self.ns, {"metadata": {"name": name}, "stringData": {
                "username": sim.username, "password": sim.password}})
            self.custom.create_cluster_custom_object("stratus.dev", "v1alpha1", "baremetalnodes", {
                "apiVersion": "stratus.dev/v1alpha1", "kind": "BareMetalNode", "metadata": {"name": name},
                "spec": {"bmc": {"address": sim.address, "credentials": {"name": name, "namespace": self.ns}},
                         "bootMACAddress": f"52:54:00:00:{len(self.names) and self.names.index(name) // 256:02x}:"
                                           f"{self.names.index(name) % 256:02x}",
                         "online": False, "inspect": False}})
        wait_until(lambda: sum(s.get("provisioningState") == "available" for s in self.statuses().values()) == len(self.names),
                   900, "all nodes to be available", 1.0)
        return time.monotonic() - started

    def power(self, want: bool) -> dict:
        before = self.counts()
        started = time.monotonic()
        for name in self.names:
            self.custom.patch_cluster_custom_object("stratus.dev", "v1alpha1", "baremetalnodes", name, {"spec": {"online": want}})
        wait_until(lambda: all(s.get("poweredOn") is want for s in self.statuses().values())
                   and all(sim.power == want for sim in self.fleet), 900, f"all powered {'on' if want else 'off'}", 0.5)
        elapsed = time.monotonic() - started
        time.sleep(1.0)  # the counter file is written twice a second
        return {"seconds": elapsed, "datagrams_per_node": (self.counts() - before) / len(self.names)}

    def close(self) -> None:
        from stratus.dev import cluster as devcluster

        try:
            for name in self.names:
                try:
                    self.custom.delete_cluster_custom_object("stratus.dev", "v1alpha1", "baremetalnodes", name)
                except Exception:  # noqa: BLE001 - best effort
                    pass
            wait_until(lambda: not self.statuses(), 600, "the nodes to be deleted", 1.0)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, 15)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, 9)
                    self.proc.wait(10)
            self.log.close()
            if not os.environ.get("STRATUS_KEEP_CLUSTER"):
                devcluster.down(CLUSTER)


# ---------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("STRATUS_IPMI_CONCURRENCY", "16")))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--driver-only", action="store_true",
                        help="time only the in-process driver (no control plane, nothing written): a quick check of a driver change")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanups on `timeout`
    os.environ["STRATUS_IPMI_CONCURRENCY"] = str(args.concurrency)
    bmcsim = load_bmcsim()
    results: dict = {"count": args.count, "concurrency": args.concurrency, "cores": os.cpu_count(),
                     "load": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-bmc-") as tmp:
        fleet = bmcsim.BmcFleet.create(pathlib.Path(tmp) / "bmcs", args.count)
        started = fleet.start(timeout=120)
        results["fleet_start_seconds"] = started
        try:
            print(f"bench: {args.count} BMCs up in {started:.1f}s", file=sys.stderr)
            if args.driver_only:
                for want in (True, False):
                    r = driver_run(fleet, want, args.concurrency)
                    print(f"driver all {'on' if want else 'off'}: {r['seconds']:.2f}s, "
                          f"{r['datagrams_per_node']:.1f} datagrams per node, {r['peak_threads']} threads")
                return 0
            results["ipmitool_on"] = ipmitool_loop(fleet, True)
            results["ipmitool_off"] = ipmitool_loop(fleet, False)
            results["ipmitool_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            print(f"bench: ipmitool {results['ipmitool_on']}, {results['ipmitool_off']}", file=sys.stderr)
            results["driver_on"] = driver_run(fleet, True, args.concurrency)
            results["driver_off"] = driver_run(fleet, False, args.concurrency)
            print(f"bench: driver {results['driver_on']}, {results['driver_off']}", file=sys.stderr)
            run = OperatorRun(fleet, pathlib.Path(tmp))
            try:
                results["operator_enroll_seconds"] = run.enroll()
                results["operator_enroll_datagrams_per_node"] = run.counts() / args.count
                results["operator_on"] = run.power(True)
                results["operator_off"] = run.power(False)
                results["operator_peak_rss_mib"] = run.peak_rss_mib()
                print(f"bench: operator {results['operator_on']}, {results['operator_off']}, "
                      f"peak {results['operator_peak_rss_mib']:.0f} MiB", file=sys.stderr)
            finally:
                run.close()
        finally:
            fleet.stop()
    text = render(results)
    print(text)
    if not args.no_write:
        (HERE / "results.md").write_text(text)
    return 0


def render(r: dict) -> str:
    n = r["count"]

    def row(name, on, off, per_node, memory):
        return f"| {name} | {on['seconds']:.1f} | {off['seconds']:.1f} | {per_node} | {memory} |"

    lines = [
        "# Bare metal: power on and off in one go",
        "",
        f"{n} simulated BMCs (`ipmi_sim`, one loopback UDP port each), {r['cores']} cores shared with other jobs "
        f"(load {r['load']:.1f} at the start). IPMI concurrency {r['concurrency']}. "
        f"Produced by `benchmarks/baremetal/bench.py`.",
        "",
        "| method | all on, confirmed (s) | all off, confirmed (s) | IPMI cost per node (on + off) | peak memory |",
        "|---|---|---|---|---|",
        row("ipmitool loop (baseline)", r["ipmitool_on"], r["ipmitool_off"],
            f"{r['ipmitool_on']['calls_per_node'] + r['ipmitool_off']['calls_per_node']:.1f} ipmitool runs (one RMCP+ session each)",
            f"{r['ipmitool_peak_rss_mib']:.0f} MiB peak RSS of one ipmitool run"),
        row("driver (stratus.drivers.ipmi, in process)", r["driver_on"], r["driver_off"],
            f"{r['driver_on']['datagrams_per_node'] + r['driver_off']['datagrams_per_node']:.1f} datagrams sent",
            f"{r['driver_on']['peak_threads']} threads busy at most"),
        row("operator (BareMetalNode, spec.online)", r["operator_on"], r["operator_off"],
            f"{r['operator_on']['datagrams_per_node'] + r['operator_off']['datagrams_per_node']:.1f} datagrams sent",
            f"{r['operator_peak_rss_mib']:.0f} MiB operator VmHWM"),
        "",
        f"Enrolling the {n} BareMetalNodes (validate the BMC, read power, `inspect: false`) took "
        f"{r['operator_enroll_seconds']:.1f}s and {r['operator_enroll_datagrams_per_node']:.1f} datagrams per node. "
        f"Starting the {n} simulators took {r['fleet_start_seconds']:.1f}s.",
        "",
        "The operator's time is measured from the first `spec.online` patch to the moment every",
        "`status.poweredOn` (read back from the BMC) and every simulator agree; its datagram count covers",
        "that window (power read, chassis control, read back; each operation in its own session).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
