"""The streaming importer against the in-memory object store and the real qemu-img."""

from __future__ import annotations

import hashlib
import subprocess

import pytest

from stratus.core.image import ImportFailure
from stratus.drivers import importer
from tests.fakes.s3 import InMemoryObjectStore


@pytest.fixture
def qcow2(tmp_path) -> bytes:
    path = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "64M"], check=True, capture_output=True)
    return path.read_bytes()


@pytest.fixture
def store() -> InMemoryObjectStore:
    s = InMemoryObjectStore()
    s.ensure_bucket("images")
    return s


def chunks(data: bytes, n: int = 4096):
    for i in range(0, len(data), n):
        yield data[i:i + n]


def test_imports_and_detects_qcow2(store, qcow2):
    seen = []
    result = importer.import_stream(store, "images", "k", chunks(qcow2), declared_format="qcow2",
                                    expected_sha256=hashlib.sha256(qcow2).hexdigest(),
                                    progress=lambda d, t: seen.append(d), progress_every=0)
    assert (result.format, result.virtual_size, result.size) == ("qcow2", 64 << 20, len(qcow2))
    assert b"".join(store.iter_object("images", "k")) == qcow2
    assert seen[-1] == len(qcow2)


@pytest.mark.parametrize(
    "declared, sha, data, reason",
    [
        ("qcow2", "0" * 64, None, "ChecksumMismatch"),
        ("raw", None, None, "FormatMismatch"),
        ("qcow2", None, b"\0" * 10000, "FormatMismatch"),
        ("raw", None, b"", "EmptyImage"),
    ],
)
def test_failed_import_leaves_nothing(store, qcow2, declared, sha, data, reason):
    data = qcow2 if data is None else data
    with pytest.raises(ImportFailure) as exc:
        importer.import_stream(store, "images", "k", chunks(data), declared_format=declared, expected_sha256=sha)
    assert exc.value.reason == reason
    assert store.stat_object("images", "k") is None


def test_too_large_stops_early(store):
    def endless():
        while True:
            yield b"\0" * 1024

    with pytest.raises(ImportFailure) as exc:
        importer.import_stream(store, "images", "k", endless(), declared_format="raw", expected_sha256=None, max_bytes=10_000)
    assert exc.value.reason == "ImageTooLarge"
    with pytest.raises(ImportFailure):
        importer.import_stream(store, "images", "k", chunks(b"x"), declared_format="raw", expected_sha256=None,
                               total=20_000, max_bytes=10_000)


def test_cancel(store):
    with pytest.raises(importer.Cancelled):
        importer.import_stream(store, "images", "k", chunks(b"\0" * 10000), declared_format="raw",
                               expected_sha256=None, stopped=lambda: True)


@pytest.mark.parametrize("depth", [1, 4])
def test_prefetch_keeps_order_and_raises_source_errors(depth):
    assert list(importer.prefetch(iter([b"a", b"b", b"c"]), depth)) == [b"a", b"b", b"c"]

    def broken():
        yield b"a"
        raise RuntimeError("source broke")

    it = importer.prefetch(broken(), depth)
    assert next(it) == b"a"
    with pytest.raises(RuntimeError, match="source broke"):
        next(it)


def test_prefetch_abandoned_stops_reading():
    """Abandoning the iterator ends the reader thread: it is not left blocked on a full
    queue for ever (a leaked thread per cancelled import), and it reads no further."""
    import threading

    read = []

    def endless():
        i = 0
        while True:
            read.append(i)
            i += 1
            yield b"x"

    before = {t for t in threading.enumerate() if t.name == "image-prefetch"}
    it = importer.prefetch(endless(), 2)
    next(it)
    it.close()
    readers = [t for t in threading.enumerate() if t.name == "image-prefetch" and t not in before]
    assert not any(t.is_alive() for t in readers), "the prefetch thread outlived its consumer"
    count = len(read)
    assert count <= 2 + 2  # what the queue held, the item in hand and the one being put
