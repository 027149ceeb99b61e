"""Shared by the bare-metal and consolidation tests: a local HTTP file server for the
deploy kernel, initrd and image, the operator restarted with its boot server on a known
port, and small HTTP helpers for playing the booted machine."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import pathlib
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

from stratus.dev.run import free_port

from .kube import wait_for


@contextlib.contextmanager
def deploy_files(root: pathlib.Path, image_name: str, image: bytes, filler: bytes) -> Iterator[dict]:
    """Serve a deploy kernel, an initrd and ``image`` from ``root`` over HTTP on 127.0.0.1."""
    (root / "vmlinuz").write_bytes(b"kernel " + filler)
    (root / "initrd").write_bytes(b"initrd " + filler)
    (root / image_name).write_bytes(image)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield {"base": base, "image_url": f"{base}/{image_name}", "sha256": hashlib.sha256(image).hexdigest()}
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def operator_with_boot_server(operator, files: dict, key: str, deadline: float, **timings: str) -> Iterator[str]:
    """The session operator restarted with a known boot-server port, kwok-simulated
    hypervisor Nodes and the given STRATUS_BAREMETAL_* timings; restored afterwards.
    Yields the boot server's URL once it answers."""
    port = free_port()
    env = {
        "STRATUS_BOOTSERVER_HTTP_PORT": str(port),
        "STRATUS_BOOTSERVER_KEY": key,
        "STRATUS_DEPLOY_KERNEL_URL": f"{files['base']}/vmlinuz",
        "STRATUS_DEPLOY_INITRD_URL": f"{files['base']}/initrd",
        "STRATUS_BAREMETAL_NODES": "kwok",
        "STRATUS_METRICS_PORT": "0",
        **{f"STRATUS_BAREMETAL_{k.upper()}": v for k, v in timings.items()},
    }
    operator.stop()
    operator.start(env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_get(f"{url}/healthz")[0] == 200, deadline, 0.5, "the boot server to answer")
        yield url
    finally:
        operator.stop()
        operator.start()


def http_get(url: str) -> tuple[int, str]:
    """(status, body); status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=10) as rsp:
            return rsp.status, rsp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


def http_post(url: str, token: str, payload: dict) -> int:
    """POST JSON with a bearer token; the status, 0 when nothing answers."""
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as rsp:
            return rsp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0
