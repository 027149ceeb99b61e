"""The image importer: fetch, hash, measure, store, in one streaming pass.

The source is read in 1 MiB chunks; each chunk goes to the sha256, the size counter,
(for the first :data:`~stratus.core.image.HEAD_BYTES` only) the head buffer that
qemu-img later inspects, and on to :meth:`ObjectStore.put_object_stream`, which uploads
one multipart part at a time. Memory therefore stays near one part plus the head,
whatever the image's size; nothing touches the local disk but the head. A reader thread
fetches and hashes up to 16 MiB ahead (:func:`prefetch`) while a part uploads, so the
network in and the upload out overlap: memory is bounded by two parts and the head.

When the bytes are stored, the checksum is compared with the expected one and the
head is given to ``qemu-img info`` (Debian's qemu-utils) to detect the real format and
virtual size (see :mod:`stratus.core.image`). A failed check deletes the stored object,
so a killed image leaves nothing behind.

Cancellation: the caller passes ``stopped`` (a callable, kopf's daemon flag); the next
chunk raises :class:`Cancelled` and the multipart upload is aborted.

URLs are logged without user info or query string (:func:`~stratus.core.image.redact_url`).

Egress: every connection the fetch opens, redirects included, goes to an address that
:class:`~stratus.core.egress.EgressPolicy` allows, checked on the resolved address and
connected to exactly that address; a refused source is never contacted, so nothing of
its answer can reach status. Environment proxies are not used (a proxy would hide the
target from the policy).

qemu-img reads untrusted bytes: the format is probed from the magic bytes first
(:func:`~stratus.core.image.probe_format`) and passed with ``-f``, so qemu-img never
guesses, and it runs under CPU-time and address-space limits.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.client
import logging
import os
import queue
import resource
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator

from ..core import image as core
from ..core.egress import EgressPolicy, EgressRefused
from .s3 import ObjectStore

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
QEMU_IMG_TIMEOUT = 60
#: qemu-img's limits: seconds of CPU and bytes of address space (it needs far less for a header).
QEMU_IMG_CPU_SECONDS = 30
QEMU_IMG_ADDRESS_SPACE = 1024 * 1024 * 1024
PREFETCH_CHUNKS = 16


class Cancelled(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class ImportResult:
    size: int
    sha256: str
    format: str
    virtual_size: int
    seconds: float


ProgressFn = Callable[[int, int | None], None]


def _qemu_img_limits() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_CPU, (QEMU_IMG_CPU_SECONDS, QEMU_IMG_CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (QEMU_IMG_ADDRESS_SPACE, QEMU_IMG_ADDRESS_SPACE))


def qemu_img_info(head: bytes) -> dict:
    """qemu-img's JSON for an image whose first bytes are ``head``, read as the format its
    magic bytes name (never probed by qemu-img), under resource limits."""
    fmt = core.probe_format(head)
    if fmt not in ("qcow2", "raw"):
        return {"format": fmt}  # refused by judge_format, naming the format; qemu-img never parses it
    with tempfile.NamedTemporaryFile(prefix="stratus-image-head-") as tmp:
        tmp.write(head)
        tmp.flush()
        try:
            res = subprocess.run(
                ["qemu-img", "info", "-f", fmt, "--output=json", tmp.name],
                capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT, preexec_fn=_qemu_img_limits,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
            )
        except FileNotFoundError:
            raise core.TransientImportError("qemu-img is not installed on the operator (Debian package qemu-utils)") from None
        except subprocess.TimeoutExpired:
            raise core.ImportFailure("FormatUnreadable", "qemu-img took too long to read the image header") from None
    if res.returncode != 0:
        raise core.ImportFailure("FormatUnreadable", f"qemu-img could not read the image as {fmt}; is it a disk image?")
    return core.parse_qemu_img_info(res.stdout)


@functools.cache
def egress_policy() -> EgressPolicy:
    return EgressPolicy.from_env()


def _checked_connection(policy: EgressPolicy, address: tuple[str, int], timeout=socket._GLOBAL_DEFAULT_TIMEOUT,
                        source_address=None) -> socket.socket:
    """socket.create_connection, but only to addresses the policy allows: every address
    the name resolves to is checked (one refused address refuses the name), then the
    connection goes to the checked address itself."""
    host, port = address
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        policy.check(sockaddr[0])
    error: OSError | None = None
    for family, type_, proto, _, sockaddr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            error = exc
            sock.close()
    raise error or OSError(f"{host} resolves to no address")


class _CheckedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, policy: EgressPolicy, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = functools.partial(_checked_connection, policy)


class _CheckedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, policy: EgressPolicy, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = functools.partial(_checked_connection, policy)


class _CheckedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: EgressPolicy) -> None:
        super().__init__()
        self.policy = policy

    def http_open(self, req):
        return self.do_open(functools.partial(_CheckedHTTPConnection, policy=self.policy), req)


class _CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: EgressPolicy) -> None:
        super().__init__()
        self.policy = policy

    def https_open(self, req):
        return self.do_open(functools.partial(_CheckedHTTPSConnection, policy=self.policy), req,
                            context=self._context)


def opener(policy: EgressPolicy) -> urllib.request.OpenerDirector:
    """An opener whose every connection (redirects too) obeys ``policy``; no env proxies."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _CheckedHTTPHandler(policy),
                                       _CheckedHTTPSHandler(policy))


def open_http(url: str, timeout: float = 30, policy: EgressPolicy | None = None) -> tuple[Iterator[bytes], int | None]:
    """The body of ``url`` as chunks and its length if the server said."""
    req = urllib.request.Request(url, headers={"User-Agent": "stratus-image-importer"})
    try:
        resp = opener(policy or egress_policy()).open(req, timeout=timeout)  # http(s) only, by the schema
    except EgressRefused as exc:
        raise core.ImportFailure(
            "SourceRefused",
            f"spec.source.http.url: {core.redact_url(url)} leads to an address in a range the operator does not fetch "
            f"from ({exc.category}); serve the image from outside the cluster, or ask the cloud's operator to allow "
            "that range (STRATUS_EGRESS_ALLOW_CIDRS)") from None
    except urllib.error.HTTPError as exc:
        raise core.http_failure(exc.code, url) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise core.TransientImportError(f"cannot reach {core.redact_url(url)}: {reason}") from None
    length = resp.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None

    def chunks() -> Iterator[bytes]:
        with resp:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except OSError as exc:
                    raise core.TransientImportError(f"reading {core.redact_url(url)} failed: {exc}") from None
                if not chunk:
                    return
                yield chunk

    return chunks(), total


_DONE = object()


def prefetch(source: Iterable[bytes], depth: int) -> Iterator[bytes]:
    """Read ``source`` in a background thread, at most ``depth`` chunks ahead, so fetching
    (and hashing) overlaps the upload of the previous part. Errors of the source are
    raised in the consumer; abandoning the iterator stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    abandoned = threading.Event()

    def put(item) -> bool:
        while not abandoned.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for chunk in source:
                if not put(chunk):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(exc)

    thread = threading.Thread(target=run, name="image-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        abandoned.set()
        thread.join(timeout=5)


class _Tee:
    """Passes chunks through while hashing, counting and keeping the head."""

    def __init__(self, source: Iterable[bytes], total: int | None, limit: int | None,
                 progress: ProgressFn | None, stopped: Callable[[], bool] | None, every: float) -> None:
        self.source, self.total, self.limit = source, total, limit
        self.progress, self.stopped, self.every = progress, stopped, every
        self.sha = hashlib.sha256()
        self.size = 0
        self.head = bytearray()
        self._last = 0.0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.source:
            if self.stopped and self.stopped():
                raise Cancelled("import cancelled")
            self.sha.update(chunk)
            self.size += len(chunk)
            core.check_size(self.size, self.limit)
            if len(self.head) < core.HEAD_BYTES:
                self.head += chunk[: core.HEAD_BYTES - len(self.head)]
            now = time.monotonic()
            if self.progress and now - self._last >= self.every:
                self._last = now
                self.progress(self.size, self.total)
            yield chunk


def import_stream(
    store: ObjectStore,
    bucket: str,
    key: str,
    source: Iterable[bytes],
    *,
    declared_format: str,
    expected_sha256: str | None,
    total: int | None = None,
    max_bytes: int | None = None,
    progress: ProgressFn | None = None,
    stopped: Callable[[], bool] | None = None,
    progress_every: float = 2.0,
    part_size: int | None = None,
) -> ImportResult:
    """Store ``source`` at bucket/key and verify it; raise ImportFailure (object deleted)
    when the bytes are not what the Image says."""
    started = time.monotonic()
    if total is not None:
        core.check_size(total, max_bytes)
    tee = _Tee(source, total, max_bytes, progress, stopped, progress_every)
    kwargs = {"part_size": part_size} if part_size else {}
    # Fetch and hash up to PREFETCH_CHUNKS MiB ahead while the previous part uploads.
    store.put_object_stream(bucket, key, prefetch(tee, PREFETCH_CHUNKS), content_type="application/octet-stream",
                            size_hint=total, **kwargs)
    digest = tee.sha.hexdigest()
    try:
        if tee.size == 0:
            raise core.ImportFailure("EmptyImage", "the source has no bytes; fix the source and create the Image again")
        core.check_checksum(digest, expected_sha256)
        fmt = core.judge_format(qemu_img_info(bytes(tee.head)), bytes(tee.head), tee.size, declared_format)
    except core.ImportFailure:
        store.delete_object(bucket, key)
        raise
    if progress:
        progress(tee.size, tee.size)
    return ImportResult(tee.size, digest, fmt.format, fmt.virtual_size, time.monotonic() - started)


def import_http(store: ObjectStore, bucket: str, key: str, url: str, **kwargs) -> ImportResult:
    chunks, total = open_http(url)
    return import_stream(store, bucket, key, chunks, total=total, **kwargs)
