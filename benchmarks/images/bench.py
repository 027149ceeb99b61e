"""Image import throughput and importer memory, with a plain copy as the baseline.

    .venv/bin/python benchmarks/images/bench.py            # 1 GiB, writes benchmarks/images/results.md
    .venv/bin/python benchmarks/images/bench.py --size-mib 64 --no-write   # a smoke run

Setup (all on 127.0.0.1, in one run): a real versitygw (dev/s3server.py) and a
threaded HTTP server serving a raw image of --size-mib MiB from a temporary file.

Each contender runs in its own child process, so its peak RSS (ru_maxrss of the child)
is its own:

- importer: stratus.drivers.importer.import_http — HTTP stream, sha256, head kept for
  qemu-img, multipart upload part by part (16 MiB), checksum and format verification.
- baseline: the `curl | aws s3 cp -` equivalent: urllib's response object streamed into
  boto3's upload_fileobj (boto3's managed transfer, 8 MiB parts, up to 10 threads), no
  hashing, no verification.

Reported: MB/s (10^6 bytes per second, wall time of the copy) and peak RSS in MiB. The
importer must stream: its peak RSS must stay far below the image size.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
MiB = 1024 * 1024


def child(kind: str, url: str, endpoint: dict, sha: str, bucket: str) -> None:
    """Runs in a subprocess: one copy, then prints a JSON line with seconds and peak RSS."""
    from stratus.drivers.s3 import AdminCredentials, S3ObjectStore

    creds = AdminCredentials(endpoint["url"], endpoint["region"], endpoint["access_key"], endpoint["secret_key"])
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    if kind == "importer":
        from stratus.drivers import importer

        store = S3ObjectStore(creds)
        result = importer.import_http(store, bucket, "importer.raw", url, declared_format="raw", expected_sha256=sha)
        size = result.size
    else:
        import urllib.request

        import boto3
        from botocore.config import Config

        client = boto3.client("s3", endpoint_url=creds.endpoint_url, region_name=creds.region,
                              aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
                              config=Config(s3={"addressing_style": "path"}))
        with urllib.request.urlopen(url) as resp:
            client.upload_fileobj(resp, bucket, "baseline.raw")
        size = client.head_object(Bucket=bucket, Key="baseline.raw")["ContentLength"]
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"kind": kind, "size": size, "seconds": seconds, "peak_rss_kib": peak, "import_rss_kib": base_rss}))


def make_image(path: pathlib.Path, size_mib: int) -> str:
    """Pseudo-random bytes (incompressible, cheap to make) and their sha256."""
    sha = hashlib.sha256()
    block = hashlib.sha256(b"stratus").digest() * (MiB // 32)
    with open(path, "wb") as f:
        for i in range(size_mib):
            chunk = bytes(b ^ (i & 0xFF) for b in block[:64]) + block[64:]
            sha.update(chunk)
            f.write(chunk)
    return sha.hexdigest()


def serve(root: pathlib.Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def run_child(kind: str, url: str, endpoint: dict, sha: str, bucket: str) -> dict:
    args = [sys.executable, __file__, "--child", kind, url, json.dumps(endpoint), sha, bucket]
    res = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2, help="Alternating rounds; the best of each is reported.")
    parser.add_argument("--no-write", action="store_true", help="Print only; do not write results.md.")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, url, endpoint, sha, bucket = args.child
        child(kind, url, json.loads(endpoint), sha, bucket)
        return

    from stratus.drivers.s3 import AdminCredentials, S3ObjectStore
    from stratus.dev.s3server import S3Server

    with tempfile.TemporaryDirectory(prefix="stratus-bench-images-") as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "www").mkdir()
        print(f"making a {args.size_mib} MiB image ...", flush=True)
        sha = make_image(tmp / "www" / "disk.raw", args.size_mib)
        server, base = serve(tmp / "www")
        with S3Server(tmp / "s3", die_with_parent=True) as ep:
            endpoint = {"url": ep.url, "region": ep.region, "access_key": ep.access_key, "secret_key": ep.secret_key}
            store = S3ObjectStore(AdminCredentials(ep.url, ep.region, ep.access_key, ep.secret_key))
            store.ensure_bucket("bench")
            results: dict[str, list[dict]] = {"importer": [], "baseline": []}
            for r in range(args.rounds):
                for kind in ("baseline", "importer") if r % 2 else ("importer", "baseline"):
                    out = run_child(kind, f"{base}/disk.raw", endpoint, sha, "bench")
                    assert out["size"] == args.size_mib * MiB, out
                    results[kind].append(out)
                    print(f"  {kind:9s} {out['size'] / out['seconds'] / 1e6:7.1f} MB/s  peak RSS {out['peak_rss_kib'] / 1024:6.1f} MiB", flush=True)
            store.delete_bucket("bench", force=True)
        server.shutdown()

    def best(kind):
        return min(results[kind], key=lambda o: o["seconds"])

    imp, base_ = best("importer"), best("baseline")
    rows = [
        ("importer (stream, sha256, qemu-img, multipart 16 MiB)", imp),
        ("baseline (urllib -> boto3 upload_fileobj)", base_),
    ]
    lines = [
        "# Image import benchmark",
        "",
        f"{args.size_mib} MiB raw image, HTTP server and versitygw on 127.0.0.1, best of {args.rounds} rounds, "
        f"each copy in its own process ({os.cpu_count()} CPUs).",
        "",
        "| contender | MB/s | seconds | peak RSS (MiB) | RSS before copy (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, o in rows:
        lines.append(f"| {label} | {o['size'] / o['seconds'] / 1e6:.1f} | {o['seconds']:.2f} | "
                     f"{o['peak_rss_kib'] / 1024:.1f} | {o['import_rss_kib'] / 1024:.1f} |")
    lines += ["", f"Importer throughput is {imp['seconds'] and base_['seconds'] / imp['seconds'] * 100:.0f}% of the baseline's; "
              f"its peak RSS grew {(imp['peak_rss_kib'] - imp['import_rss_kib']) / 1024:.1f} MiB during a {args.size_mib} MiB import."]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        (HERE / "results.md").write_text(text)


if __name__ == "__main__":
    main()
