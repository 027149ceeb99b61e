"""Metering exporter benchmark: scrape time and memory with 10,000 metered objects.

Run from the project root:

    .venv/bin/python benchmarks/metering/bench.py            # writes benchmarks/metering/results.md
    .venv/bin/python benchmarks/metering/bench.py --quick    # 1,000 objects, prints only

What is measured, in one process so the figures are comparable:

* the Stratus exporter (``stratus.services.metrics``): a custom collector that reads the
  in-memory index on each scrape. Scrape time of ``generate_latest`` and of a real HTTP
  GET /metrics from the exporter's own server; the exposition's size and series count;
  the index's memory (tracemalloc) and the process RSS growth;
* the baseline it is measured against: prometheus-client's ordinary labelled Gauges,
  one child per series, set as events arrive (the usual "instrument the handler" way,
  which keeps a second copy of every figure and has no per-object lifecycle);
* the event path that keeps both current: ``Metering.on_event`` (index entry, usage
  tracker observation) per object, and the size and serialisation time of the tracker
  state that is saved at most once a second.

Signing and verification throughput and ledger growth per 1,000 objects per day are
measured by ``benchmarks/ledger/bench.py`` (see ``benchmarks/ledger/results.md``) and
are not repeated here.

Objects: 40% servers (2-16 vCPUs, 30% of them stopped), 30% volumes, 20% buckets, 10%
images, spread over 100 projects. Timings are the best of several runs.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import resource
import sys
import time
import tracemalloc
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from importlib.metadata import version

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from stratus.loops.metering_closer import Config, Metering
from stratus.core.ledger import Ledger, Signer
from stratus.drivers.ledger_store import MemoryLedgerStore
from stratus.services.metrics import kind_by_plural

HERE = Path(__file__).resolve().parent
GiB = 1 << 30


def bodies(n: int, projects: int, seed: int = 7) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ns = f"project-{i % projects:03d}"
        meta = {"name": f"obj-{i:05d}", "namespace": ns, "uid": f"uid-{i:08d}",
                "creationTimestamp": "2026-01-01T00:00:00Z"}
        r = rng.random()
        if r < 0.4:
            active = rng.random() > 0.3
            out.append(("servers", {"metadata": meta, "spec": {"flavor": rng.choice(["m1.small", "m1.large", "c1.xl"])},
                                    "status": {"phase": "ACTIVE" if active else "SHUTOFF",
                                               "vcpus": rng.choice([2, 4, 8, 16]), "memory": f"{rng.choice([2, 4, 8])}Gi",
                                               "node": f"hv-{rng.randrange(40)}",
                                               "conditions": [{"type": "Ready", "status": "True" if active else "False",
                                                               "lastTransitionTime": "2026-01-01T00:00:05Z"}]}}))
        elif r < 0.7:
            out.append(("volumes", {"metadata": meta, "spec": {"size": f"{rng.choice([10, 20, 100])}Gi",
                                                               "volumeType": rng.choice(["ssd", "hdd"])},
                                    "status": {"phase": "Available"}}))
        elif r < 0.9:
            out.append(("buckets", {"metadata": meta, "status": {"usage": {"objects": rng.randrange(10**6),
                                                                           "bytes": rng.randrange(10**12)}}}))
        else:
            out.append(("images", {"metadata": meta, "spec": {"diskFormat": "qcow2"},
                                   "status": {"size": rng.randrange(10**10), "phase": "Active"}}))
    return out


def best(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def current_rss_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return rss_kib()


def _metering() -> Metering:
    m = Metering(Config(metrics_port=0, interval=3600, grace=0))
    m.floor = 0
    m.ledger = Ledger(MemoryLedgerStore(), Signer.generate())
    return m


def stratus_exporter(objs, runs):
    def ingest():
        m = _metering()
        for plural, body in objs:
            m.on_event(kind_by_plural(plural), None, body, {})
    events = best(ingest, max(2, runs // 2))
    gc.collect()
    rss0 = current_rss_kib()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    m = _metering()
    for plural, body in objs:
        m.on_event(kind_by_plural(plural), None, body, {})
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    mem = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    rss = current_rss_kib() - rss0
    text = m.exporter.scrape()
    scrape = best(m.exporter.scrape, runs)
    port = m.exporter.serve(0, auth="none")  # loopback; authentication is not what this measures
    url = f"http://127.0.0.1:{port}/metrics"
    http = best(lambda: urllib.request.urlopen(url, timeout=30).read(), runs)
    m.exporter.shutdown()
    state = m.tracker.dumps()
    dumps = best(m.tracker.dumps, max(3, runs // 2))
    series = sum(1 for line in text.decode().splitlines() if line and not line.startswith("#"))
    return {"events_s": events, "index_bytes": mem, "rss_kib": rss, "scrape_s": scrape, "http_s": http,
            "size": len(text), "series": series, "state_bytes": len(state), "dumps_s": dumps}


def baseline_gauges(objs, runs):
    """Plain labelled Gauges set per event: the usual instrumentation."""
    def build():
        reg = CollectorRegistry()
        return reg, _gauges(reg)

    def ingest():
        reg, (g, info) = build()
        _set(objs, g, info)
    events = best(ingest, max(2, runs // 2))
    gc.collect()
    rss0 = current_rss_kib()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    reg, (g, info) = build()
    _set(objs, g, info)
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    mem = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    rss = current_rss_kib() - rss0
    text = generate_latest(reg)
    scrape = best(lambda: generate_latest(reg), runs)
    series = sum(1 for line in text.decode().splitlines() if line and not line.startswith("#"))
    return {"events_s": events, "index_bytes": mem, "rss_kib": rss, "scrape_s": scrape, "http_s": None,
            "size": len(text), "series": series, "state_bytes": None, "dumps_s": None}


def _gauges(reg):
    labels = ["project", "namespace", "name"]
    g = {
        "servers": [Gauge("b_server_vcpus", "", labels, registry=reg), Gauge("b_server_memory_bytes", "", labels, registry=reg),
                    Gauge("b_server_running", "", labels, registry=reg)],
        "volumes": [Gauge("b_volume_size_bytes", "", labels, registry=reg)],
        "buckets": [Gauge("b_bucket_objects", "", labels, registry=reg), Gauge("b_bucket_size_bytes", "", labels, registry=reg)],
        "images": [Gauge("b_image_size_bytes", "", labels, registry=reg)],
    }
    info = Gauge("b_server_info", "", labels + ["flavor", "state", "node"], registry=reg)
    return g, info


def _set(objs, g, info):
    for plural, body in objs:
        kind = kind_by_plural(plural)
        meta = body["metadata"]
        lv = [meta["namespace"], meta["namespace"], meta["name"]]
        for gauge, v in zip(g[plural], kind.values):
            gauge.labels(*lv).set(v.read(body))
        if plural == "servers":
            inf = kind.info(body)
            info.labels(*lv, inf["flavor"], inf["state"], inf["node"]).set(1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--objects", type=int, default=10_000)
    args = ap.parse_args()
    n = 1000 if args.quick else args.objects
    runs = 3 if args.quick else 7
    started = time.perf_counter()
    objs = bodies(n, projects=100)
    ours = stratus_exporter(objs, runs)
    base = baseline_gauges(objs, runs)
    took = time.perf_counter() - started

    def ms(x):
        return "–" if x is None else f"{x * 1000:,.1f}"

    def num(x):
        return "–" if x is None else f"{x:,}"

    lines = [
        "# Metering exporter benchmark results",
        "",
        f"Generated by `benchmarks/metering/bench.py` on {datetime.now(UTC):%Y-%m-%d} in {took:.0f} s. "
        f"Python {platform.python_version()}, prometheus-client {version('prometheus-client')}, "
        f"{os.cpu_count()} CPUs ({platform.machine()}), shared with other work; best of {runs} runs.",
        "",
        f"## {n:,} metered objects in 100 projects",
        "",
        "40% servers (30% of them stopped), 30% volumes, 20% buckets, 10% images.",
        "",
        "| | Stratus exporter (custom collector over the index) | baseline: labelled Gauges set per event |",
        "|---|---:|---:|",
        f"| scrape: `generate_latest`, ms | {ms(ours['scrape_s'])} | {ms(base['scrape_s'])} |",
        f"| scrape: HTTP GET /metrics from the exporter's server, ms | {ms(ours['http_s'])} | – |",
        f"| exposition size, bytes | {num(ours['size'])} | {num(base['size'])} |",
        f"| samples in the exposition | {num(ours['series'])} | {num(base['series'])} |",
        f"| memory held after ingesting the objects (tracemalloc), bytes | {num(ours['index_bytes'])} | {num(base['index_bytes'])} |",
        f"| per object, bytes | {num(ours['index_bytes'] // n)} | {num(base['index_bytes'] // n)} |",
        f"| process RSS growth, KiB | {num(ours['rss_kib'])} | {num(base['rss_kib'])} |",
        f"| ingest all objects (one event each), ms | {ms(ours['events_s'])} | {ms(base['events_s'])} |",
        f"| per event, µs | {ours['events_s'] / n * 1e6:,.1f} | {base['events_s'] / n * 1e6:,.1f} |",
        f"| tracker state saved (JSON), bytes | {num(ours['state_bytes'])} | – |",
        f"| tracker state serialisation, ms | {ms(ours['dumps_s'])} | – |",
        "",
        "The Stratus column's memory and ingest time include the usage tracker (the "
        "step functions billing integrates), which the baseline does not have; its exposition "
        "also carries the per-project aggregates (`stratus_project_objects`, "
        "`stratus_project_usage_rate`), `_info` series for every kind and the process metrics.",
        "Signing/verification throughput and ledger growth: see `benchmarks/ledger/results.md`.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        (HERE / "results.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
