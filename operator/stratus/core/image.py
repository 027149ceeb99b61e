"""Images (Glance), the pure part: format detection, the lifecycle, visibility, names.

Format detection
    The importer runs ``qemu-img info --output=json`` on the first bytes of the image (a
    qcow2 header says its virtual size; a raw image is its own length) and this module
    judges the answer: :func:`judge_format` compares what qemu-img found with the
    declared ``diskFormat`` (an ISO is raw to qemu-img, told apart by the ISO 9660
    signature ``CD001`` at byte 32769), and refuses qcow2 images that name a backing
    file or an external data file: the bytes must be the whole disk, and qemu-img must
    never be led to open other files.

Lifecycle (Glance's states as phases)
    queued -> importing -> active <-> deactivated, and importing -> killed. killed is
    final: the source is immutable, so a new Image is the way to retry (Glance does the
    same). :func:`next_phase` is the whole table; anything else is refused.

Visibility
    private: the owning namespace only; shared: it and the namespaces in sharedWith;
    public: every namespace. :func:`visible_to` is the rule the CLI and the image
    service both use.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re

#: Bytes of the image the importer keeps for qemu-img (the qcow2 header and tables'
#: start are in the first cluster; the ISO signature sits at 32 KiB).
HEAD_BYTES = 4 * 1024 * 1024
ISO_SIGNATURE_OFFSET = 0x8001
ISO_SIGNATURE = b"CD001"

QUEUED, IMPORTING, ACTIVE, DEACTIVATED, KILLED = "queued", "importing", "active", "deactivated", "killed"
PHASES = (QUEUED, IMPORTING, ACTIVE, DEACTIVATED, KILLED)


class Event(str, enum.Enum):
    START = "start"  # the importer begins
    SUCCEED = "succeed"  # bytes stored and verified
    FAIL = "fail"  # the import failed for good
    RETRY = "retry"  # a transient failure: back to queued
    DEACTIVATE = "deactivate"
    REACTIVATE = "reactivate"
    READY = "ready"  # nothing to import (registry source)


TRANSITIONS: dict[tuple[str, Event], str] = {
    (QUEUED, Event.START): IMPORTING,
    (QUEUED, Event.READY): ACTIVE,
    (QUEUED, Event.FAIL): KILLED,
    (IMPORTING, Event.START): IMPORTING,  # resumed after an operator restart
    (IMPORTING, Event.SUCCEED): ACTIVE,
    (IMPORTING, Event.FAIL): KILLED,
    (IMPORTING, Event.RETRY): QUEUED,
    (ACTIVE, Event.DEACTIVATE): DEACTIVATED,
    (ACTIVE, Event.REACTIVATE): ACTIVE,
    (DEACTIVATED, Event.REACTIVATE): ACTIVE,
    (DEACTIVATED, Event.DEACTIVATE): DEACTIVATED,
}


class InvalidTransition(ValueError):
    pass


def next_phase(phase: str, event: Event) -> str:
    """The phase after ``event``; :class:`InvalidTransition` when the table has none."""
    phase = phase or QUEUED
    try:
        return TRANSITIONS[(phase, event)]
    except KeyError:
        raise InvalidTransition(f"an image in phase {phase!r} cannot {event.value}") from None


# -- import failures -----------------------------------------------------------------------


class ImportFailure(Exception):
    """An import that cannot succeed without the user changing something.

    ``reason`` is the CamelCase condition reason; the message says what to do next."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class TransientImportError(Exception):
    """An import that may succeed if tried again (a 503, a reset connection)."""


def http_failure(status: int, url: str) -> ImportFailure | TransientImportError:
    """What an HTTP error status of the source means for the import."""
    shown = redact_url(url)
    if status == 404 or status == 410:
        return ImportFailure("SourceNotFound", f"{shown} answered {status} (not found); fix spec.source.http.url and create the Image again")
    if status in (401, 403):
        return ImportFailure("SourceForbidden", f"{shown} answered {status}; the URL must be readable without credentials")
    if status == 429 or status >= 500:
        return TransientImportError(f"{shown} answered {status}; retrying")
    return ImportFailure("SourceError", f"{shown} answered {status}; fix spec.source.http.url and create the Image again")


def redact_url(url: str) -> str:
    """The URL without user info or query string (either may carry a credential)."""
    url = re.sub(r"^(https?://)[^/@]*@", r"\1", url)
    return url.split("?", 1)[0]


def check_size(size: int, limit: int | None) -> None:
    if limit is not None and size > limit:
        raise ImportFailure("ImageTooLarge", f"the image is larger than the image store's limit of {limit} bytes; use a smaller image or ask the administrator to raise STRATUS_IMAGE_MAX_BYTES")


def check_checksum(actual: str, expected: str | None) -> None:
    if expected and actual != expected:
        raise ImportFailure("ChecksumMismatch", f"the bytes have sha256 {actual}, but spec.source says {expected}; check the URL and the checksum, then create the Image again")


@dataclasses.dataclass(frozen=True)
class FormatInfo:
    format: str  # qcow2, raw or iso
    virtual_size: int


#: Magic bytes at offset 0 of the formats qemu-img knows (those Stratus refuses too, so the
#: refusal names them). Anything else is read as raw (an ISO is raw with a signature).
MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"QFI\xfb", "qcow2"),
    (b"QED\x00", "qed"),
    (b"KDMV", "vmdk"),
    (b"# Disk DescriptorFile", "vmdk"),
    (b"vhdxfile", "vhdx"),
    (b"conectix", "vpc"),
    (b"LUKS\xba\xbe", "luks"),
    (b"WithoutFreeSpace", "parallels"),
    (b"cloop", "cloop"),
)
#: VirtualBox VDI: the signature sits at offset 0x40.
VDI_SIGNATURE = (0x40, b"\x7f\x10\xda\xbe")


def probe_format(head: bytes) -> str:
    """The format the image's first bytes declare, for ``qemu-img info -f``; raw otherwise."""
    for magic, fmt in MAGIC:
        if head.startswith(magic):
            return fmt
    offset, signature = VDI_SIGNATURE
    if head[offset:offset + len(signature)] == signature:
        return "vdi"
    return "raw"


def parse_qemu_img_info(output: str) -> dict:
    try:
        info = json.loads(output)
    except json.JSONDecodeError as exc:
        raise ImportFailure("FormatUnreadable", f"qemu-img could not read the image ({exc.msg}); is it a disk image?") from None
    if not isinstance(info, dict) or "format" not in info:
        raise ImportFailure("FormatUnreadable", "qemu-img could not read the image; is it a disk image?")
    return info


def judge_format(info: dict, head: bytes, total_size: int, declared: str) -> FormatInfo:
    """The real format and virtual size of an image, or :class:`ImportFailure`.

    ``info`` is qemu-img's JSON for the first bytes ``head``; ``total_size`` is the length
    of the whole image."""
    fmt = info.get("format")
    data = (info.get("format-specific") or {}).get("data") or {}
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise ImportFailure("BackingFileNotAllowed", "the qcow2 image names a backing file; flatten it (qemu-img convert -O qcow2) and import the result")
    if data.get("data-file"):
        raise ImportFailure("BackingFileNotAllowed", "the qcow2 image uses an external data file; convert it to a self-contained image")
    if fmt == "raw":
        detected = "iso" if head[ISO_SIGNATURE_OFFSET:ISO_SIGNATURE_OFFSET + len(ISO_SIGNATURE)] == ISO_SIGNATURE else "raw"
        virtual = total_size
    elif fmt == "qcow2":
        detected = "qcow2"
        virtual = int(info.get("virtual-size") or 0)
        if data.get("corrupt"):
            raise ImportFailure("ImageCorrupt", "qemu-img reports the qcow2 image as corrupt; repair it (qemu-img check -r all) and import again")
    else:
        raise ImportFailure("UnsupportedFormat", f"the image is {fmt}, which Stratus does not accept; convert it to qcow2 or raw")
    if detected != declared and not (declared == "raw" and detected == "iso"):
        raise ImportFailure("FormatMismatch", f"spec.diskFormat is {declared}, but the bytes are {detected}; set spec.diskFormat: {detected} in a new Image")
    return FormatInfo(detected, virtual)


# -- visibility --------------------------------------------------------------------------


def visible_to(image_namespace: str, visibility: str, shared_with: list[str] | None, namespace: str) -> bool:
    """Whether callers of project (namespace) ``namespace`` may see the image."""
    if namespace == image_namespace or visibility == "public":
        return True
    return visibility == "shared" and namespace in (shared_with or [])


def matches_properties(properties: dict, wanted: dict[str, str]) -> bool:
    """Whether an image's spec.properties has every key=value in ``wanted``.

    Keys may be Glance's snake_case (os_distro) or the camelCase of the API (osDistro);
    other keys are looked up in properties.extra."""
    extra = properties.get("extra") or {}
    for key, value in wanted.items():
        camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key)
        have = properties.get(camel, extra.get(key, extra.get(camel)))
        if have != value:
            return False
    return True


#: Properties mirrored to labels, so `kubectl get images -l stratus.dev/os-distro=ubuntu` works.
LABELLED_PROPERTIES = {"osDistro": "os-distro", "osVersion": "os-version", "architecture": "architecture"}
LABEL_VALUE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$")


def property_labels(properties: dict, prefix: str) -> dict[str, str | None]:
    """Labels to merge onto the Image: one per set key property; None removes a label."""
    out: dict[str, str | None] = {}
    for prop, label in LABELLED_PROPERTIES.items():
        value = properties.get(prop)
        out[f"{prefix}/{label}"] = value if value and LABEL_VALUE.match(value) else None
    return out


def object_key(namespace: str, name: str, uid: str) -> str:
    """Where the bytes of an image live in the image store bucket (uid: a recreated
    image of the same name never reads its predecessor's bytes)."""
    return f"images/{namespace}/{name}/{uid}"


def percent(done: int, total: int | None) -> int | None:
    if not total:
        return None
    return max(0, min(100, done * 100 // total))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
