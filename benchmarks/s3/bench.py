"""Streaming upload: the driver's multipart loop against boto3's transfer manager.

    .venv/bin/python benchmarks/s3/bench.py                 # 512 MiB x 5 rounds, writes benchmarks/s3/results.md
    .venv/bin/python benchmarks/s3/bench.py --size-mib 64 --rounds 1 --no-write   # a smoke run

Setup (127.0.0.1, one run): a real versitygw (stratus.dev.s3server) and one bucket. The
source is what the image importer gives the store: a generator of odd-sized chunks
(1 MiB + 17 bytes) that SHA-256-hashes every chunk as it passes, so hashing competes with
the upload for the CPU as it does in an import. Parts of 16 MiB (the driver's default).

Contenders, each run in its own child process (so its peak RSS is its own), in turn per
round so load drifts hit all alike:

- driver: `S3ObjectStore.put_object_stream` as it is: read a part, `upload_part`, repeat
  (one part in flight; reading and sending take turns).
- transfer manager, c=N (the library baseline): boto3's `upload_fileobj` with a
  TransferConfig of N threads and N parts in memory (`max_in_memory_upload_chunks`), fed
  through a non-seekable reader that returns whole parts, so the hashing source is read
  once, in order; ETag and version then come from a HEAD, as the transfer manager
  returns nothing. Reading the next part overlaps sending the previous one.

Reported: MB/s (10^6 bytes / wall seconds of the upload, best round and median), peak RSS
of the child above its RSS before the upload, and the tracemalloc peak of Python
allocations during the upload (what tests/integration/test_s3_driver.py bounds: under
three parts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "operator"))
MiB = 1024 * 1024
PART = 16 * MiB
CHUNK = MiB + 17


def source(total: int, digest):
    block = os.urandom(CHUNK)
    sent = 0
    while sent < total:
        data = block if total - sent >= CHUNK else block[: total - sent]
        digest.update(data)
        sent += len(data)
        yield data


class PartReader:
    """A non-seekable file object whose read(n) returns exactly n bytes until the end."""

    def __init__(self, stream) -> None:
        from stratus.drivers.s3 import _ChunkReader

        self._chunks = _ChunkReader(stream)

    def read(self, n=-1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(lambda: self._chunks.read_exact(MiB), b""))
        return self._chunks.read_exact(n)


def transfer_manager(store, bucket: str, key: str, stream, concurrency: int) -> None:
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=concurrency,
                            preferred_transfer_client="classic")
    config.max_in_memory_upload_chunks = concurrency  # s3transfer's setting; boto3's constructor lacks it
    store._client.upload_fileobj(PartReader(stream), bucket, key, Config=config)
    store._client.head_object(Bucket=bucket, Key=key)


def child(kind: str, endpoint: dict, bucket: str, total: int) -> None:
    from stratus.drivers import s3

    store = s3.S3ObjectStore(s3.AdminCredentials(endpoint["url"], endpoint["region"], endpoint["access_key"],
                                                 endpoint["secret_key"]))
    digest = hashlib.sha256()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.monotonic()
    if kind == "driver":
        size = store.put_object_stream(bucket, kind, source(total, digest), part_size=PART).size
    else:
        transfer_manager(store, bucket, kind, source(total, digest), int(kind.rsplit("=", 1)[1]))
        size = total
    seconds = time.monotonic() - started
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert size == total
    info = store.stat_object(bucket, kind)
    assert info is not None and info.size == total
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "rss_growth_mib": (peak_rss - base_rss) / 1024,
                      "traced_peak_mib": traced / MiB}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", default="1,2", help="transfer manager thread counts to try")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "ENDPOINT_JSON", "BUCKET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    total = args.size_mib * MiB
    if args.child:
        child(args.child[0], json.loads(args.child[1]), args.child[2], total)
        return 0

    from stratus.dev.s3server import S3Server
    from stratus.drivers import s3

    kinds = ["driver"] + [f"transfer manager, c={c}" for c in args.concurrency.split(",")]
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp, S3Server(pathlib.Path(tmp), die_with_parent=True) as ep:
        endpoint = {"url": ep.url, "region": ep.region, "access_key": ep.access_key, "secret_key": ep.secret_key}
        store = s3.S3ObjectStore(s3.AdminCredentials(ep.url, ep.region, ep.access_key, ep.secret_key))
        bucket = "bench-upload"
        store.ensure_bucket(bucket)
        for rnd in range(args.rounds):
            for kind in kinds:
                out = subprocess.run([sys.executable, __file__, "--size-mib", str(args.size_mib), "--child", kind,
                                      json.dumps(endpoint), bucket], check=True, capture_output=True, text=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results[kind].append(r)
                print(f"round {rnd + 1} {kind}: {total / 1e6 / r['seconds']:.1f} MB/s, "
                      f"RSS +{r['rss_growth_mib']:.0f} MiB, traced {r['traced_peak_mib']:.0f} MiB", file=sys.stderr)
                store.delete_object(bucket, kind)
        store.delete_bucket(bucket, force=True)
    text = render(args, results, load)
    print(text)
    if not args.no_write:
        (HERE / "results.md").write_text(text)
    return 0


def render(args, results: dict[str, list[dict]], load: float) -> str:
    total = args.size_mib * MiB
    lines = [
        "# Streaming upload: the driver's multipart loop against boto3's transfer manager",
        "",
        f"{args.size_mib} MiB from a hashing generator (1 MiB + 17 byte chunks, SHA-256 as it goes) into a real "
        f"versitygw on 127.0.0.1, 16 MiB parts, {args.rounds} rounds, each upload in its own process; "
        f"{os.cpu_count()} cores shared with other jobs (load {load:.1f} at the start). "
        "Produced by `benchmarks/s3/bench.py`.",
        "",
        "| contender | MB/s best | MB/s median | peak RSS growth (MiB) | traced Python peak (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, runs in results.items():
        rates = [total / 1e6 / r["seconds"] for r in runs]
        lines.append(f"| {kind} | {max(rates):.1f} | {statistics.median(rates):.1f} | "
                     f"{max(r['rss_growth_mib'] for r in runs):.0f} | {max(r['traced_peak_mib'] for r in runs):.0f} |")
    lines += ["", "Per round (MB/s):", "", "| contender | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " |",
              "|---|" + "---:|" * args.rounds]
    for kind, runs in results.items():
        lines.append(f"| {kind} | " + " | ".join(f"{total / 1e6 / r['seconds']:.1f}" for r in runs) + " |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
