"""Pure image logic: lifecycle table, format judgement, visibility, ranges, signatures."""

from __future__ import annotations

import pytest

from stratus.core import image as core
from stratus.core.image import Event
from stratus.services import images as service


@pytest.mark.parametrize(
    "phase, event, expected",
    [
        ("", Event.START, "importing"),
        ("queued", Event.START, "importing"),
        ("queued", Event.READY, "active"),
        ("importing", Event.SUCCEED, "active"),
        ("importing", Event.FAIL, "killed"),
        ("importing", Event.RETRY, "queued"),
        ("importing", Event.START, "importing"),
        ("active", Event.DEACTIVATE, "deactivated"),
        ("deactivated", Event.REACTIVATE, "active"),
    ],
)
def test_transitions(phase, event, expected):
    assert core.next_phase(phase, event) == expected


@pytest.mark.parametrize(
    "phase, event",
    [("killed", Event.START), ("killed", Event.REACTIVATE), ("active", Event.START), ("queued", Event.SUCCEED),
     ("deactivated", Event.FAIL)],
)
def test_invalid_transitions(phase, event):
    with pytest.raises(core.InvalidTransition):
        core.next_phase(phase, event)


QCOW2 = {"format": "qcow2", "virtual-size": 1 << 30, "format-specific": {"type": "qcow2", "data": {"corrupt": False}}}
ISO_HEAD = bytes(0x8001) + b"CD001" + bytes(100)


@pytest.mark.parametrize(
    "info, head, total, declared, expected",
    [
        (QCOW2, b"QFI\xfb", 5000, "qcow2", ("qcow2", 1 << 30)),
        ({"format": "raw"}, bytes(100), 4096, "raw", ("raw", 4096)),
        ({"format": "raw"}, ISO_HEAD, 90000, "iso", ("iso", 90000)),
        ({"format": "raw"}, ISO_HEAD, 90000, "raw", ("iso", 90000)),  # an ISO is raw bytes too
    ],
    ids=["qcow2", "raw", "iso", "iso-declared-raw"],
)
def test_judge_format_accepts(info, head, total, declared, expected):
    got = core.judge_format(info, head, total, declared)
    assert (got.format, got.virtual_size) == expected


@pytest.mark.parametrize(
    "info, head, declared, reason",
    [
        ({"format": "raw"}, bytes(100), "qcow2", "FormatMismatch"),
        (QCOW2, b"", "raw", "FormatMismatch"),
        ({"format": "raw"}, bytes(100), "iso", "FormatMismatch"),
        ({"format": "vmdk", "virtual-size": 1}, b"", "qcow2", "UnsupportedFormat"),
        ({**QCOW2, "backing-filename": "/etc/passwd"}, b"", "qcow2", "BackingFileNotAllowed"),
        ({"format": "qcow2", "virtual-size": 1, "format-specific": {"data": {"data-file": "x"}}}, b"", "qcow2", "BackingFileNotAllowed"),
        ({"format": "qcow2", "virtual-size": 1, "format-specific": {"data": {"corrupt": True}}}, b"", "qcow2", "ImageCorrupt"),
    ],
    ids=["raw-as-qcow2", "qcow2-as-raw", "raw-as-iso", "vmdk", "backing-file", "data-file", "corrupt"],
)
def test_judge_format_refuses(info, head, declared, reason):
    with pytest.raises(core.ImportFailure) as exc:
        core.judge_format(info, head, 100, declared)
    assert exc.value.reason == reason
    assert "spec" in exc.value.message or "convert" in exc.value.message or "repair" in exc.value.message or "flatten" in exc.value.message


@pytest.mark.parametrize("output", ["not json", "[]", '{"filename": "x"}'])
def test_parse_qemu_img_info_refuses_garbage(output):
    with pytest.raises(core.ImportFailure) as exc:
        core.parse_qemu_img_info(output)
    assert exc.value.reason == "FormatUnreadable"


@pytest.mark.parametrize(
    "status, kind, reason",
    [(404, core.ImportFailure, "SourceNotFound"), (410, core.ImportFailure, "SourceNotFound"),
     (403, core.ImportFailure, "SourceForbidden"), (400, core.ImportFailure, "SourceError"),
     (503, core.TransientImportError, None), (429, core.TransientImportError, None)],
)
def test_http_failure(status, kind, reason):
    err = core.http_failure(status, "https://user:pw@example.org/a.qcow2?token=secret")
    assert isinstance(err, kind)
    assert "secret" not in str(err) and "pw" not in str(err)
    if reason:
        assert err.reason == reason


def test_checksum_and_size():
    core.check_checksum("ab", "ab")
    core.check_checksum("ab", None)
    with pytest.raises(core.ImportFailure) as exc:
        core.check_checksum("ab", "cd")
    assert exc.value.reason == "ChecksumMismatch"
    core.check_size(10, 10)
    core.check_size(10, None)
    with pytest.raises(core.ImportFailure) as exc:
        core.check_size(11, 10)
    assert exc.value.reason == "ImageTooLarge"


@pytest.mark.parametrize(
    "image_ns, visibility, shared, caller, visible",
    [
        ("a", "private", [], "a", True),
        ("a", "private", [], "b", False),
        ("a", "public", [], "b", True),
        ("a", "shared", ["b"], "b", True),
        ("a", "shared", ["b"], "c", False),
        ("a", "private", ["b"], "b", False),  # sharedWith means nothing unless shared
    ],
)
def test_visibility(image_ns, visibility, shared, caller, visible):
    assert core.visible_to(image_ns, visibility, shared, caller) is visible


@pytest.mark.parametrize(
    "wanted, matches",
    [
        ({"os_distro": "ubuntu"}, True),
        ({"osDistro": "ubuntu", "architecture": "x86_64"}, True),
        ({"os_distro": "fedora"}, False),
        ({"hw_vif_model": "virtio"}, True),
        ({"hw_vif_model": "e1000"}, False),
        ({"missing": "x"}, False),
    ],
)
def test_matches_properties(wanted, matches):
    props = {"osDistro": "ubuntu", "architecture": "x86_64", "extra": {"hw_vif_model": "virtio"}}
    assert core.matches_properties(props, wanted) is matches


def test_property_labels():
    labels = core.property_labels({"osDistro": "ubuntu", "osVersion": "24.04"}, "stratus.dev")
    assert labels == {"stratus.dev/os-distro": "ubuntu", "stratus.dev/os-version": "24.04", "stratus.dev/architecture": None}


@pytest.mark.parametrize(
    "header, size, expected",
    [
        (None, 100, None),
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=90-", 100, (90, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-500", 100, (0, 99)),
        ("bytes=50-500", 100, (50, 99)),
        ("bytes=0-1,5-6", 100, None),
        ("items=0-1", 100, None),
        ("bytes=9-3", 100, None),
        ("bytes=x-3", 100, None),
    ],
)
def test_parse_range(header, size, expected):
    assert service.parse_range(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=200-300", "bytes=-0"])
def test_parse_range_unsatisfiable(header):
    with pytest.raises(service.Unsatisfiable):
        service.parse_range(header, 100)


def test_signatures():
    key = service.derive_key("admin-secret")
    sig = service.sign(key, "ns", "img", "uid-1", 2000)
    assert service.verify(key, "ns", "img", "uid-1", "2000", sig, now=1000)
    assert not service.verify(key, "ns", "img", "uid-1", "2000", sig, now=3000)  # expired
    assert not service.verify(key, "ns", "img", "uid-2", "2000", sig, now=1000)  # recreated image
    assert not service.verify(key, "ns", "other", "uid-1", "2000", sig, now=1000)
    assert not service.verify(service.derive_key("other"), "ns", "img", "uid-1", "2000", sig, now=1000)
    assert not service.verify(key, "ns", "img", "uid-1", "abc", sig, now=1000)


@pytest.mark.parametrize(
    "user, ns",
    [("system:serviceaccount:team-a:builder", "team-a"), ("alice", None), ("system:serviceaccount:x", None)],
)
def test_serviceaccount_namespace(user, ns):
    assert service.serviceaccount_namespace(user) == ns
