"""Images end to end: a real qcow2 made with qemu-img, served by a local HTTP server,
imported by the operator into the versitygw image store, checksum-verified, queried by
property, and downloaded byte-identical (whole and by range) from the image service;
a wrong checksum or a missing URL ends in killed with the reason; a protected image
refuses deletion; callers see only what they may."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import pathlib
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
from kubernetes.client.rest import ApiException

from .kube import IMAGE_HOST, wait_for
from .test_buckets import ensure_bucket_class

CLASS = "default"  # the operator's STRATUS_IMAGE_BUCKETCLASS default
# The operator started for this session refuses images above 100 MiB (see test_too_large).
os.environ.setdefault("STRATUS_IMAGE_MAX_BYTES", "100Mi")


@pytest.fixture(scope="module")
def image_store(kube, operator, s3_endpoint) -> str:
    ensure_bucket_class(kube, s3_endpoint, CLASS)
    wait_for(lambda: kube.condition(kube.get("bucketclasses", CLASS)).get("status") == "True", 60, what="BucketClass Ready")
    return CLASS


@pytest.fixture(scope="module")
def web_root(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("www")


@pytest.fixture(scope="module")
def web(web_root):
    """A plain HTTP server on 127.0.0.2 serving web_root: the one loopback address the test
    operator's egress policy allows (STRATUS_EGRESS_ALLOW_CIDRS, tests/integration/kube.py)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(web_root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer((IMAGE_HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{IMAGE_HOST}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def qcow2(web_root) -> tuple[str, bytes]:
    """A 64 MiB qcow2 with 3 MiB of data written into it (a few MiB on disk)."""
    path = web_root / "cirros.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "64M"], check=True, capture_output=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 3M", str(path)], check=True, capture_output=True)
    return "cirros.qcow2", path.read_bytes()


def image_body(name, url, sha, **spec) -> dict:
    return {"kind": "Image", "metadata": {"name": name},
            "spec": {"source": {"http": {"url": url, "sha256": sha}}, "diskFormat": "qcow2", **spec}}


def phase_is(kube, name, namespace, *phases):
    obj = kube.get("images", name, namespace)
    return obj if (obj or {}).get("status", {}).get("phase") in phases else None


def fetch(url, headers=None) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def sa_token(kube, namespace, name="reader") -> str:
    try:
        kube.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    tr = kube.core.create_namespaced_service_account_token(name, namespace, {"spec": {"expirationSeconds": 600}})
    return tr.status.token


def stratus(kube, *args) -> subprocess.CompletedProcess:
    exe = pathlib.Path(sys.executable).parent / "stratus"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120,
                          env={"KUBECONFIG": kube.kubeconfig, "PATH": "/usr/bin:/bin"})


def test_api_server_rejects_bad_images(kube, crds, namespace):
    cases = [
        ({"source": {"http": {"url": "http://x/a", "sha256": "nothex"}}, "diskFormat": "qcow2"}, "spec.source.http.sha256"),
        ({"source": {"http": {"url": "http://x/a", "sha256": "0" * 64}, "registry": {"url": "quay.io/a/b:1"}},
          "diskFormat": "qcow2"}, "spec.source"),
        ({"source": {"registry": {"url": "quay.io/a/b:1"}}, "diskFormat": "vhd"}, "spec.diskFormat"),
        ({"source": {"registry": {"url": "quay.io/a/b:1"}}, "diskFormat": "raw", "sharedWith": ["b"]}, "spec.sharedWith"),
    ]
    for spec, field in cases:
        with pytest.raises(ApiException) as exc:
            kube.create("images", {"kind": "Image", "metadata": {"name": "bad"}, "spec": spec}, namespace)
        assert exc.value.status == 422 and field in exc.value.body, exc.value.body


def test_import_verify_query_download(kube, image_store, web, qcow2, namespace, tmp_path, object_store):
    path, data = qcow2
    sha = hashlib.sha256(data).hexdigest()
    kube.create("images", image_body("cirros", f"{web}/{path}", sha, minDisk=1, minRam=128, visibility="public",
                                     properties={"osDistro": "cirros", "osVersion": "0.6", "architecture": "x86_64",
                                                 "extra": {"hw_vif_model": "virtio"}}), namespace)
    img = wait_for(lambda: phase_is(kube, "cirros", namespace, "active", "killed"), 90, what="image active")
    status = img["status"]
    assert status["phase"] == "active", status
    assert status["checksum"] == sha and status["size"] == len(data)
    assert status["virtualSize"] == 64 * 1024 * 1024 and status["detectedFormat"] == "qcow2"
    assert status["progress"]["percent"] == 100
    assert kube.condition(img)["reason"] == "Active"
    wait_for(lambda: any(e.reason == "Active" for e in kube.events_for(namespace, "cirros", "Image")), 15, what="event Active")

    # The CDI source for compute, and the download through it (a signed URL).
    signed = status["dataVolumeSource"]["http"]["url"]
    code, headers, body = fetch(signed)
    assert code == 200 and body == data and headers["X-Image-Checksum-Sha256"] == sha
    code, headers, body = fetch(signed, {"Range": "bytes=1000-4999"})
    assert code == 206 and body == data[1000:5000] and headers["Content-Range"] == f"bytes 1000-4999/{len(data)}"
    code, _, body = fetch(signed, {"Range": f"bytes=-{100}"})
    assert code == 206 and body == data[-100:]
    assert fetch(signed, {"Range": f"bytes={len(data)}-"})[0] == 416
    assert fetch(signed.replace("signature=", "signature=0"))[0] == 403

    # Bearer tokens: no token is 401; this project's ServiceAccount may read it.
    url = status["downloadUrl"]
    assert fetch(url)[0] == 401
    # Authentication comes before the lookup: an image that does not exist answers the same.
    missing = url.replace(f"/{namespace}/cirros/", f"/{namespace}/no-such-image/")
    assert fetch(missing)[0] == 401
    assert fetch(missing, {"Authorization": "Bearer not-a-token"})[0] == 401
    assert fetch(signed.replace(f"/{namespace}/cirros/", f"/{namespace}/no-such-image/"))[0] == 403
    token = sa_token(kube, namespace)
    code, _, body = fetch(url, {"Authorization": f"Bearer {token}", "Range": "bytes=0-99"})
    assert code == 206 and body == data[:100]

    # Queries: labels, field selectors, the CLI.
    res = kube.kubectl("get", "images", "-n", namespace, "-l", "stratus.dev/os-distro=cirros", "-o", "name")
    assert res.stdout.split() == ["image.stratus.dev/cirros"], res.stderr
    res = kube.kubectl("get", "images", "-n", namespace, "--field-selector", "spec.properties.osDistro=cirros,status.phase=active", "-o", "name")
    assert res.stdout.split() == ["image.stratus.dev/cirros"], res.stderr
    res = kube.kubectl("get", "images", "-n", namespace, "--field-selector", "spec.properties.osDistro=ubuntu", "-o", "name")
    assert res.stdout.split() == [], res.stderr
    res = stratus(kube, "image", "list", "-n", "some-other-project", "--property", "os_distro=cirros",
                  "--property", "hw_vif_model=virtio", "--visibility", "public", "-o", "name")
    assert f"{namespace}/cirros" in res.stdout.split(), res.stderr
    res = stratus(kube, "image", "list", "-n", "some-other-project", "--property", "os_distro=ubuntu", "-o", "name")
    assert f"{namespace}/cirros" not in res.stdout.split()

    out = tmp_path / "downloaded.qcow2"
    res = stratus(kube, "image", "download", "cirros", "-n", namespace, "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == data

    # Deactivation: the service refuses, status says so; reactivation restores it.
    kube.patch("images", "cirros", {"spec": {"deactivated": True}}, namespace)
    wait_for(lambda: phase_is(kube, "cirros", namespace, "deactivated"), 30, what="deactivated")
    assert fetch(signed)[0] == 403
    kube.patch("images", "cirros", {"spec": {"deactivated": False}}, namespace)
    wait_for(lambda: phase_is(kube, "cirros", namespace, "active"), 30, what="reactivated")

    # Deleting the image deletes its bytes from the store.
    location = status["location"]
    assert object_store.stat_object(location["bucket"], location["key"]).size == len(data)
    kube.delete("images", "cirros", namespace)
    wait_for(lambda: kube.get("images", "cirros", namespace) is None, 30, what="image gone")
    assert object_store.stat_object(location["bucket"], location["key"]) is None


def test_private_image_hidden_from_other_projects(kube, image_store, web, qcow2, namespace):
    path, data = qcow2
    sha = hashlib.sha256(data).hexdigest()
    kube.create("images", image_body("private", f"{web}/{path}", sha), namespace)
    img = wait_for(lambda: phase_is(kube, "private", namespace, "active"), 90, what="image active")
    other = f"t-other-{uuid.uuid4().hex[:5]}"
    kube.core.create_namespace({"metadata": {"name": other}})
    try:
        url = img["status"]["downloadUrl"]
        assert fetch(url, {"Authorization": f"Bearer {sa_token(kube, other)}"})[0] == 404
        assert fetch(url, {"Authorization": f"Bearer {sa_token(kube, namespace)}"})[0] == 200
        # Shared with the other project: now it may.
        kube.patch("images", "private", {"spec": {"visibility": "shared", "sharedWith": [other]}}, namespace)
        wait_for(lambda: fetch(url, {"Authorization": f"Bearer {sa_token(kube, other)}", "Range": "bytes=0-0"})[0] == 206,
                 15, what="shared image readable")
        res = stratus(kube, "image", "list", "-n", other, "--visibility", "shared", "-o", "name")
        assert f"{namespace}/private" in res.stdout.split()
    finally:
        kube.core.delete_namespace(other)


@pytest.mark.parametrize(
    "url_suffix, sha, reason",
    [("cirros.qcow2", "0" * 64, "ChecksumMismatch"), ("missing.qcow2", "0" * 64, "SourceNotFound")],
    ids=["wrong-checksum", "not-found"],
)
def test_failed_import_is_killed_with_reason(kube, image_store, web, qcow2, namespace, url_suffix, sha, reason):
    kube.create("images", image_body("bad", f"{web}/{url_suffix}", sha), namespace)
    img = wait_for(lambda: phase_is(kube, "bad", namespace, "killed", "active"), 90, what="image killed")
    cond = kube.condition(img)
    assert img["status"]["phase"] == "killed" and cond["status"] == "False" and cond["reason"] == reason
    assert "create the Image again" in cond["message"]
    assert not img["status"].get("dataVolumeSource")
    wait_for(lambda: any(e.reason == reason and e.type == "Warning" for e in kube.events_for(namespace, "bad", "Image")),
             15, what=f"a Warning event {reason}")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{metrics}/metrics",        # the operator's own metrics, on loopback
    "http://169.254.169.254/latest/meta-data/",  # a cloud metadata service
    "http://[::1]:{metrics}/metrics",
    "http://localhost:{metrics}/metrics",
])
def test_sources_in_refused_ranges_are_never_fetched(kube, image_store, web, namespace, url):
    """Server-side request forgery: the operator refuses to fetch from loopback, link-local
    and metadata addresses, before connecting, and status reveals nothing of the target."""
    kube.create("images", image_body("ssrf", url.format(metrics=9090), "0" * 64), namespace)
    img = wait_for(lambda: phase_is(kube, "ssrf", namespace, "killed", "active"), 60, what="image killed")
    cond = kube.condition(img)
    assert cond["reason"] == "SourceRefused", cond
    assert "spec.source.http.url" in cond["message"], cond
    assert not img["status"].get("checksum") and not img["status"].get("size"), img["status"]


def test_format_mismatch_is_killed(kube, image_store, web, qcow2, namespace):
    path, data = qcow2
    kube.create("images", {**image_body("raw", f"{web}/{path}", hashlib.sha256(data).hexdigest()),
                           "spec": {"source": {"http": {"url": f"{web}/{path}", "sha256": hashlib.sha256(data).hexdigest()}},
                                    "diskFormat": "raw"}}, namespace)
    img = wait_for(lambda: phase_is(kube, "raw", namespace, "killed", "active"), 90, what="image killed")
    assert kube.condition(img)["reason"] == "FormatMismatch"
    assert "spec.diskFormat is raw, but the bytes are qcow2" in kube.condition(img)["message"]


def test_protected_image_refuses_deletion(kube, image_store, namespace):
    kube.create("images", {"kind": "Image", "metadata": {"name": "golden"},
                           "spec": {"source": {"registry": {"url": "quay.io/containerdisks/fedora:41"}},
                                    "diskFormat": "qcow2", "containerFormat": "docker", "protected": True}}, namespace)
    img = wait_for(lambda: phase_is(kube, "golden", namespace, "active"), 30, what="registry image active")
    assert img["status"]["dataVolumeSource"] == {"registry": {"url": "docker://quay.io/containerdisks/fedora:41"}}

    def refused():
        with pytest.raises(ApiException) as exc:
            kube.delete("images", "golden", namespace)
        return exc.value

    err = wait_for(lambda: refused(), 20, what="deletion refused")  # the policy may take a moment to load
    assert err.status in (403, 422) and "protected" in err.body
    assert kube.get("images", "golden", namespace)["metadata"].get("deletionTimestamp") is None
    kube.patch("images", "golden", {"spec": {"protected": False}}, namespace)
    kube.delete("images", "golden", namespace)
    wait_for(lambda: kube.get("images", "golden", namespace) is None, 30, what="image deleted")


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """Serves `data` slowly (64 KiB every `delay` seconds), so an import takes a while."""

    data = b""
    delay = 0.02

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.data)))
        self.end_headers()
        try:
            for i in range(0, len(self.data), 65536):
                self.wfile.write(self.data[i:i + 65536])
                time.sleep(self.delay)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_slowly(data: bytes, delay: float = 0.02):
    """An HTTP server on IMAGE_HOST (the loopback address the test operator's egress
    policy fetches from) serving ``data`` at any path slowly; yields its base URL."""
    server = http.server.ThreadingHTTPServer((IMAGE_HOST, 0), type("H", (SlowHandler,), {"data": data, "delay": delay}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{IMAGE_HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_import_survives_operator_crash(kube, image_store, operator, namespace, tmp_path):
    disk = tmp_path / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "256M"], check=True, capture_output=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x33 0 8M", str(disk)], check=True, capture_output=True)
    data = disk.read_bytes()
    with serve_slowly(data) as base:
        url = f"{base}/big.qcow2"
        kube.create("images", image_body("big", url, hashlib.sha256(data).hexdigest()), namespace)
        mid = wait_for(lambda: (phase_is(kube, "big", namespace, "importing") or {}).get("status", {}).get("progress", {}).get("bytes"),
                       60, interval=0.1, what="import in progress")
        assert 0 < mid < len(data)
        operator.kill()
        operator.start()
        img = wait_for(lambda: phase_is(kube, "big", namespace, "active", "killed"), 120, what="image active after restart")
        assert img["status"]["phase"] == "active" and img["status"]["checksum"] == hashlib.sha256(data).hexdigest()
        code, _, body = fetch(img["status"]["dataVolumeSource"]["http"]["url"])
        assert code == 200 and body == data


def put(url, data: bytes, token: str | None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/octet-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers, method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_upload_needs_update_rights_and_is_verified(kube, image_store, qcow2, namespace):
    _, data = qcow2
    sha = hashlib.sha256(data).hexdigest()
    kube.create("images", {"kind": "Image", "metadata": {"name": "up"},
                           "spec": {"source": {"upload": {"sha256": sha}}, "diskFormat": "qcow2"}}, namespace)
    img = wait_for(lambda: kube.condition(kube.get("images", "up", namespace)).get("reason") == "AwaitingUpload"
                   and kube.get("images", "up", namespace), 30, what="AwaitingUpload")
    url = img["status"]["downloadUrl"]
    assert img["status"]["phase"] == "queued" and url in kube.condition(img)["message"]
    token = sa_token(kube, namespace, "uploader")
    assert put(url, data, None)[0] == 401
    assert put(url, data, token)[0] == 403  # no RBAC yet
    rbac = kubernetes_rbac(kube)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "image-uploader"}, "rules": [
        {"apiGroups": ["stratus.dev"], "resources": ["images"], "verbs": ["get", "update"]}]})
    rbac.create_namespaced_role_binding(namespace, {"metadata": {"name": "image-uploader"},
                                                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "image-uploader"},
                                                    "subjects": [{"kind": "ServiceAccount", "name": "uploader", "namespace": namespace}]})
    code, body = wait_for(lambda: (lambda r: r if r[0] != 403 else None)(put(url, data, token)), 15, what="upload accepted")
    assert code == 201, body
    img = wait_for(lambda: phase_is(kube, "up", namespace, "active"), 30, what="uploaded image active")
    assert img["status"]["checksum"] == sha and img["status"]["virtualSize"] == 64 * 1024 * 1024
    assert put(url, data, token)[0] == 409  # an active image takes no second upload
    code, _, got = fetch(img["status"]["dataVolumeSource"]["http"]["url"])
    assert code == 200 and got == data


def kubernetes_rbac(kube):
    import kubernetes

    return kubernetes.client.RbacAuthorizationV1Api(kube.api)


def test_too_large_is_killed(kube, image_store, web, web_root, namespace):
    if os.environ["STRATUS_IMAGE_MAX_BYTES"] != "100Mi":
        pytest.fail("the operator of this session was started with another STRATUS_IMAGE_MAX_BYTES")
    big = web_root / "huge.raw"
    with open(big, "wb") as f:
        f.truncate(101 * 1024 * 1024)  # sparse: no disk, but the server says 101 MiB
    kube.create("images", {"kind": "Image", "metadata": {"name": "huge"},
                           "spec": {"source": {"http": {"url": f"{web}/huge.raw", "sha256": "0" * 64}}, "diskFormat": "raw"}}, namespace)
    img = wait_for(lambda: phase_is(kube, "huge", namespace, "killed", "active"), 60, what="image killed")
    cond = kube.condition(img)
    assert cond["reason"] == "ImageTooLarge" and str(100 * 1024 * 1024) in cond["message"]
