"""The signed, hash-chained usage ledger: canonical JSON, keys, verification, export, stores."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stratus.core.ledger import (
    GENESIS,
    CanonicalError,
    ChainError,
    ChainHead,
    Keyring,
    Ledger,
    Problem,
    PublicKey,
    Record,
    RecordConflict,
    RecordError,
    Signer,
    canonical_json,
    close_due,
    export_csv,
    export_json,
    export_rows,
    parse_canonical,
    parse_record_id,
    record_id,
    seal,
    usage_totals,
    verify,
)
from stratus.core.metering import IntervalUsage, PriceList, ResourceUsage, UsageTracker
from stratus.drivers.ledger_store import DirectoryLedgerStore, LedgerStore, MemoryLedgerStore, S3LedgerStore

T0 = datetime(2025, 3, 1, 0, 0, 0, tzinfo=UTC)
KEY_A = Signer.from_raw(bytes(range(32)))
KEY_B = Signer.from_raw(bytes(range(1, 33)))


def at(minutes: int = 0, hours: int = 0) -> datetime:
    return T0 + timedelta(hours=hours, minutes=minutes)


def usage(hour: int, vcpu: int = 3600, project: str = "demo") -> IntervalUsage:
    lines = (ResourceUsage("uid-1", "Server", {"vcpu-seconds": vcpu}, name="web"),) if vcpu else ()
    return IntervalUsage(project, at(hours=hour), at(hours=hour + 1), {"vcpu-seconds": vcpu} if vcpu else {}, lines)


def chain(n: int, signer: Signer = KEY_A, project: str = "demo") -> list[Record]:
    out: list[Record] = []
    for h in range(n):
        out.append(seal(usage(h, vcpu=3600 + h, project=project), ChainHead.of(out[-1]) if out else None, signer))
    return out


KEYRING = Keyring([KEY_A])


# --------------------------------------------------------------------------- canonical JSON

CANONICAL = [
    pytest.param({"b": 1, "a": 2}, b'{"a":2,"b":1}', id="keys-sorted"),
    pytest.param({"a": [1, {"d": None, "c": True}]}, b'{"a":[1,{"c":true,"d":null}]}', id="nested"),
    pytest.param({"n": -0}, b'{"n":0}', id="minus-zero-is-zero"),
    pytest.param({"n": 2**80}, b'{"n":1208925819614629174706176}', id="big-integers-exact"),
    pytest.param("é\u2028/", '"é\u2028/"'.encode(), id="non-ascii-and-slash-literal"),
    pytest.param("\"\\\b\f\n\r\t\x01\x1f\x7f", b'"\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\x7f"', id="escapes"),
    pytest.param([], b"[]", id="empty-array"),
    pytest.param({"Z": 1, "a": 2, "_": 3}, b'{"Z":1,"_":3,"a":2}', id="byte-order-of-names"),
]


@pytest.mark.parametrize(("value", "expected"), CANONICAL)
def test_canonical_json(value: object, expected: bytes) -> None:
    assert canonical_json(value) == expected
    assert parse_canonical(expected) == value


NOT_REPRESENTABLE = [
    pytest.param({"x": 1.0}, id="float"),
    pytest.param({"x": float("nan")}, id="nan"),
    pytest.param({"é": 1}, id="non-ascii-member-name"),
    pytest.param({1: 1}, id="non-string-member-name"),
    pytest.param({"x": "\ud800"}, id="lone-surrogate"),
    pytest.param({"x": {1, 2}}, id="set"),
    pytest.param({"x": b"bytes"}, id="bytes"),
]


@pytest.mark.parametrize("value", NOT_REPRESENTABLE)
def test_values_without_canonical_form_are_refused(value: object) -> None:
    with pytest.raises(CanonicalError):
        canonical_json(value)


NOT_CANONICAL_BYTES = [
    pytest.param(b'{"b":1,"a":2}', id="unsorted"),
    pytest.param(b'{"a": 1}', id="space"),
    pytest.param(b'{"a":1}\n', id="trailing-newline"),
    pytest.param(b'{"a":1,"a":1}', id="duplicate-name"),
    pytest.param(b'{"a":1.0}', id="float"),
    pytest.param(b'{"a":1e3}', id="exponent"),
    pytest.param(b'{"a":NaN}', id="nan"),
    pytest.param(b'{"a":-0}', id="minus-zero"),
    pytest.param(b'{"a":"\\u0041"}', id="needless-escape"),
    pytest.param(b'{"a":"\\u001F"}', id="uppercase-escape"),
    pytest.param(b'{"a":"\\/"}', id="escaped-slash"),
    pytest.param('\ufeff{"a":1}'.encode(), id="byte-order-mark"),
    pytest.param(b'{"a":"\xff"}', id="invalid-utf8"),
    pytest.param(b'{"a":"\\ud800"}', id="escaped-lone-surrogate"),
    pytest.param(b'{"a":1', id="truncated"),
]


@pytest.mark.parametrize("data", NOT_CANONICAL_BYTES)
def test_non_canonical_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(CanonicalError):
        parse_canonical(data)


# --------------------------------------------------------------------------- keys


def test_key_id_is_the_rfc7638_thumbprint_and_signatures_match_rfc8032() -> None:
    # RFC 8032 section 7.1 test 1 and the RFC 8037 appendix A.3 thumbprint of that key.
    signer = Signer.from_raw(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    assert signer.public_key.raw.hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert signer.key_id == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert signer.sign(b"").hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )


def test_keys_round_trip_through_pem_raw_and_jwks() -> None:
    s = Signer.generate()
    assert Signer.from_pem(s.private_pem()).key_id == s.key_id
    assert Signer.from_pem(s.private_pem().decode()).key_id == s.key_id
    assert Signer.from_raw(s.private_raw()).key_id == s.key_id
    assert PublicKey.from_pem(s.public_key.pem()) == s.public_key
    ring = Keyring([s, KEY_A])
    again = Keyring.from_jwks(json.loads(json.dumps(ring.to_jwks())))
    assert again.key_ids() == ring.key_ids() == sorted([s.key_id, KEY_A.key_id])
    assert Keyring.from_pems([s.public_key.pem()]).key_ids() == [s.key_id]
    assert "PRIVATE" not in repr(s) and s.key_id in repr(s)


def test_a_jwk_whose_kid_is_not_its_thumbprint_is_refused() -> None:
    jwk = KEY_A.public_key.jwk() | {"kid": KEY_B.key_id}
    with pytest.raises(ValueError, match="thumbprint"):
        PublicKey.from_jwk(jwk)


def test_other_key_types_are_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="Ed25519"):
        Signer.from_pem(pem)


# --------------------------------------------------------------------------- records


def test_a_sealed_record_is_canonical_signed_and_chained() -> None:
    r0, r1 = chain(2)
    assert Record.from_bytes(r0.data) == r0
    assert json.loads(r0.data) == r0.body
    assert (r0.id, r0.seq, r0.prev, r0.key_id) == ("demo/20250301T000000Z", 0, GENESIS, KEY_A.key_id)
    assert (r1.seq, r1.prev) == (1, r0.hash)
    assert r0.to_usage() == usage(0, vcpu=3600)
    assert KEY_A.public_key.verify(r0.signature, r0.signed_bytes())
    assert r1.signed_bytes() == canonical_json({k: v for k, v in r1.body.items() if k != "sig"})


def test_sealing_is_deterministic() -> None:
    assert [r.data for r in chain(3)] == [r.data for r in chain(3)]


def test_record_ids_are_derived_from_project_and_start() -> None:
    assert record_id("demo", at(hours=25)) == "demo/20250302T010000Z"
    assert parse_record_id("demo/20250302T010000Z") == ("demo", at(hours=25))
    for bad in ("../etc/20250302T010000Z", "Demo/20250302T010000Z", "demo/2025-03-02", "demo/20251302T010000Z"):
        with pytest.raises(ValueError):
            parse_record_id(bad)
    with pytest.raises(ValueError):
        record_id("../x", at())


def test_sealing_refuses_to_break_the_chain() -> None:
    (r0,) = chain(1)
    with pytest.raises(ChainError, match="starts at"):
        seal(usage(2), ChainHead.of(r0), KEY_A)
    with pytest.raises(ChainError, match="project"):
        seal(usage(1, project="other"), ChainHead.of(r0), KEY_A)


def resign(body: dict, signer: Signer = KEY_A) -> bytes:
    """A record body re-signed: what someone holding the key could forge."""
    from stratus.core.ledger.canonical import _b64u

    b = {k: v for k, v in body.items() if k != "sig"}
    b["sig"] = _b64u(signer.sign(canonical_json(b)))
    return canonical_json(b)


MALFORMED = [
    pytest.param(lambda b: b | {"v": 2}, "version", id="unknown-version"),
    pytest.param(lambda b: {k: v for k, v in b.items() if k != "usage"}, "missing", id="missing-member"),
    pytest.param(lambda b: b | {"extra": 1}, "unexpected", id="extra-member"),
    pytest.param(lambda b: b | {"id": "demo/20250301T020000Z"}, "id", id="id-not-derived"),
    pytest.param(lambda b: b | {"end": b["start"]}, "before it starts", id="empty-interval"),
    pytest.param(lambda b: b | {"seq": -1}, "seq", id="negative-seq"),
    pytest.param(lambda b: b | {"prev": "AB" * 32}, "prev", id="uppercase-prev"),
    pytest.param(lambda b: b | {"start": "2025-03-01T00:00:00+00:00"}, "UTC", id="time-format"),
    pytest.param(lambda b: b | {"resources": [b["resources"][0]] * 2, "usage": {"vcpu-seconds": 7200}},
                 "sorted", id="repeated-resource"),
]


@pytest.mark.parametrize(("edit", "message"), MALFORMED)
def test_malformed_records_are_refused_even_when_signed(edit, message: str) -> None:
    (r0,) = chain(1)
    with pytest.raises(RecordError, match=message) as e:
        Record.from_bytes(resign(edit(dict(r0.body))))
    assert e.value.problem is Problem.MALFORMED


def test_signed_totals_that_are_not_the_sum_of_the_lines_are_malformed() -> None:
    (r0,) = chain(1)
    forged = resign(dict(r0.body) | {"usage": {"vcpu-seconds": 1}})
    result = verify([forged], KEYRING)
    assert result.error is not None and result.error.problem is Problem.MALFORMED
    assert "sum" in result.error.detail and result.error.seq == 0


# --------------------------------------------------------------------------- verification


def test_an_intact_chain_verifies() -> None:
    records = chain(5)
    result = verify([r.data for r in records], KEYRING)
    assert result.ok and bool(result) and result.error is None and result.checked == 5
    assert result.heads["demo"] == ChainHead.of(records[-1])
    assert verify(records, KEYRING).ok  # Record objects as well as bytes
    assert verify([], KEYRING).ok


def flip(data: bytes, pos: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1:]


def edit_usage_digit(records: list[Record]) -> list[bytes]:
    data = [r.data for r in records]
    pos = data[2].rindex(b'"vcpu-seconds":') + len(b'"vcpu-seconds":')  # the total
    data[2] = data[2][:pos] + b"9" + data[2][pos + 1:]
    return data


def edit_name(records: list[Record]) -> list[bytes]:
    return [r.data.replace(b'"web"', b'"wab"') if r.seq == 2 else r.data for r in records]


def forged_fork(records: list[Record]) -> list[bytes]:
    other = seal(usage(1, vcpu=1), ChainHead.of(records[0]), KEY_A)
    return [records[0].data, records[1].data, other.data, records[2].data]


def forged_time_gap(records: list[Record]) -> list[bytes]:
    body = dict(records[2].body) | {"start": "2025-03-01T02:30:00Z", "id": "demo/20250301T023000Z"}
    return [records[0].data, records[1].data, resign(body)]


def forged_overlap(records: list[Record]) -> list[bytes]:
    body = dict(records[2].body) | {"start": "2025-03-01T01:30:00Z", "id": "demo/20250301T013000Z"}
    return [records[0].data, records[1].data, resign(body)]


def forged_prev(records: list[Record]) -> list[bytes]:
    body = dict(records[2].body) | {"prev": records[0].hash}
    return [records[0].data, records[1].data, resign(body)]


TAMPERING = [
    # (what is done to a 5-record chain, problem, index of the first bad record, seq reported)
    pytest.param(edit_usage_digit, Problem.BAD_SIGNATURE, 2, 2, id="usage-edited-by-one-byte"),
    pytest.param(edit_name, Problem.BAD_SIGNATURE, 2, 2, id="resource-name-edited"),
    pytest.param(lambda rs: [flip(r.data, 40) if r.seq == 1 else r.data for r in rs], Problem.MALFORMED, 1, None,
                 id="id-edited-by-one-bit"),
    pytest.param(lambda rs: [r.data for r in rs if r.seq != 2], Problem.GAP, 2, 3, id="record-deleted"),
    pytest.param(lambda rs: [r.data for r in rs[1:]], Problem.GAP, 0, 1, id="first-record-deleted"),
    pytest.param(lambda rs: [rs[0].data, rs[2].data, rs[1].data, rs[3].data], Problem.REORDERED, 1, 2,
                 id="pair-reordered"),
    pytest.param(lambda rs: [rs[0].data, rs[1].data, rs[1].data, rs[2].data], Problem.DUPLICATE, 2, 1,
                 id="record-repeated"),
    pytest.param(forged_fork, Problem.DUPLICATE, 2, 1, id="second-record-with-the-same-seq"),
    pytest.param(forged_prev, Problem.BROKEN_CHAIN, 2, 2, id="prev-points-elsewhere"),
    pytest.param(forged_time_gap, Problem.TIME_GAP, 2, 2, id="hole-in-time"),
    pytest.param(forged_overlap, Problem.TIME_OVERLAP, 2, 2, id="overlap-in-time"),
    pytest.param(lambda rs: [rs[0].data, rs[1].data.replace(b'"seq":1', b'"seq": 1')], Problem.NOT_CANONICAL, 1,
                 None, id="whitespace-added"),
    pytest.param(lambda rs: [rs[0].data, rs[1].data[:-1]], Problem.MALFORMED, 1, None, id="truncated-file"),
    pytest.param(lambda rs: [rs[0].data, seal(usage(1), ChainHead.of(rs[0]), KEY_B).data], Problem.UNKNOWN_KEY, 1,
                 1, id="signed-by-an-unknown-key"),
]


@pytest.mark.parametrize(("tamper", "problem", "index", "seq"), TAMPERING)
def test_tampering_is_caught_at_the_first_bad_record(tamper, problem: Problem, index: int, seq: int | None) -> None:
    result = verify(tamper(chain(5)), KEYRING)
    assert not result.ok
    assert result.error is not None
    assert (result.error.problem, result.error.index, result.error.seq) == (problem, index, seq)
    assert result.checked == index
    assert str(result.error).startswith(f"record #{index}")


@pytest.mark.parametrize("victim", range(3))
def test_every_single_byte_edit_is_caught_at_the_edited_record(victim: int) -> None:
    records = chain(3)
    for pos in range(len(records[victim].data)):
        data = [r.data for r in records]
        data[victim] = flip(data[victim], pos)
        result = verify(data, KEYRING)
        assert not result.ok and result.error is not None, pos
        assert result.error.index == victim, (pos, str(result.error))


def test_a_deleted_tail_is_caught_against_the_published_head() -> None:
    records = chain(5)
    published = {"demo": ChainHead.of(records[-1])}
    assert verify(records, KEYRING, expect_heads=published).ok
    result = verify(records[:3], KEYRING, expect_heads=published)
    assert result.error is not None
    assert (result.error.problem, result.error.seq, result.error.record_id) == (
        Problem.TRUNCATED, 4, "demo/20250301T040000Z")
    other = seal(usage(4, vcpu=1), ChainHead.of(records[3]), KEY_A)
    result = verify([*records[:4], other], KEYRING, expect_heads=published)
    assert result.error is not None and result.error.problem is Problem.BROKEN_CHAIN


def test_verification_can_start_after_an_anchor() -> None:
    records = chain(5)
    anchors = {"demo": ChainHead.of(records[1])}
    assert verify(records[2:], KEYRING, anchors=anchors).ok
    result = verify(records[1:], KEYRING, anchors=anchors)
    assert result.error is not None and result.error.problem is Problem.DUPLICATE


def test_chains_of_several_projects_verify_independently() -> None:
    a, b = chain(3, project="alpha"), chain(3, project="beta")
    mixed = [a[0], b[0], a[1], b[1], a[2], b[2]]
    assert verify(mixed, KEYRING).ok
    result = verify([a[0], b[0], a[2], b[1]], KEYRING)
    assert result.error is not None
    assert (result.error.problem, result.error.index, result.error.project) == (Problem.GAP, 2, "alpha")


def test_key_rotation_keeps_old_records_verifiable() -> None:
    store = MemoryLedgerStore()
    ledger = Ledger(store, KEY_A)
    ledger.append(usage(0))
    ledger.append(usage(1))
    ledger.signer = KEY_B  # rotated: the new key signs from now on
    ledger.append(usage(2))
    records = ledger.records("demo")
    assert [r.key_id for r in records] == [KEY_A.key_id, KEY_A.key_id, KEY_B.key_id]
    assert verify(records, Keyring([KEY_A, KEY_B])).ok
    only_new = verify(records, Keyring([KEY_B]))
    assert only_new.error is not None and (only_new.error.problem, only_new.error.index) == (Problem.UNKNOWN_KEY, 0)
    only_old = verify(records, Keyring([KEY_A]))
    assert only_old.error is not None and (only_old.error.problem, only_old.error.index) == (Problem.UNKNOWN_KEY, 2)
    published = Keyring.from_jwks(Keyring([KEY_A, KEY_B]).to_jwks())
    assert ledger.verify(published).ok


# --------------------------------------------------------------------------- the ledger over a store


def test_appending_the_same_interval_twice_writes_one_record() -> None:
    store = MemoryLedgerStore()
    ledger = Ledger(store, KEY_A)
    first = ledger.append(usage(0))
    again = Ledger(store, KEY_A).append(usage(0))  # e.g. after a restart
    assert again == first and store.ids("demo") == ["demo/20250301T000000Z"]
    with pytest.raises(RecordConflict) as e:
        ledger.append(usage(0, vcpu=1))
    assert e.value.existing == first


def test_the_store_refuses_a_different_record_under_an_existing_id() -> None:
    store = MemoryLedgerStore()
    (r0,) = chain(1)
    assert store.put(r0.id, r0.data) is True
    assert store.put(r0.id, r0.data) is False
    other = seal(usage(0, vcpu=1), None, KEY_A)
    with pytest.raises(RecordConflict):
        store.put(other.id, other.data)
    assert store.get(r0.id) == r0.data


def test_a_totals_only_ledger_keeps_no_resource_lines() -> None:
    store = MemoryLedgerStore()
    ledger = Ledger(store, KEY_A, detail=False)
    first = ledger.append(usage(0))
    assert first.resources == [] and first.usage == {"vcpu-seconds": 3600}
    assert len(first.data) < len(seal(usage(0), None, KEY_A).data)
    assert ledger.append(usage(0)) == first  # still idempotent
    with pytest.raises(RecordConflict):
        ledger.append(usage(0, vcpu=1))
    ledger.append(usage(1))
    assert ledger.verify(KEYRING).ok


def test_ledger_refuses_a_gap_in_time() -> None:
    ledger = Ledger(MemoryLedgerStore(), KEY_A)
    ledger.append(usage(0))
    with pytest.raises(ChainError):
        ledger.append(usage(2))


def test_ledger_verify_finds_tampering_in_the_store() -> None:
    store = MemoryLedgerStore()
    ledger = Ledger(store, KEY_A)
    for h in range(4):
        ledger.append(usage(h))
    assert ledger.verify(KEYRING).ok
    store.tamper("demo/20250301T010000Z", None)
    result = ledger.verify(KEYRING)
    assert result.error is not None and (result.error.problem, result.error.seq) == (Problem.GAP, 2)
    store.tamper("demo/20250301T020000Z", b"{}")
    result = ledger.verify(KEYRING)
    assert result.error is not None
    assert (result.error.problem, result.error.record_id) == (Problem.MALFORMED, "demo/20250301T020000Z")


def metered(tracker: UsageTracker) -> None:
    tracker.observe("demo", "s1", "Server", {"vcpu-seconds": 2, "volume-byte-seconds": 10}, True, at(10))
    tracker.observe("demo", "s1", "Server", {"vcpu-seconds": 2, "volume-byte-seconds": 10}, False, at(70))
    tracker.observe("demo", "s1", "Server", {"vcpu-seconds": 2, "volume-byte-seconds": 10}, True, at(100))
    tracker.remove("demo", "s1", at(hours=3, minutes=5))


def test_close_due_writes_a_verifiable_chain() -> None:
    tracker, store = UsageTracker(), MemoryLedgerStore()
    ledger = Ledger(store, KEY_A)
    metered(tracker)
    report = close_due(tracker, ledger, at(hours=4))
    assert [r.seq for r in report.records] == [0, 1, 2, 3] and report.adopted == []
    assert ledger.verify(KEYRING).ok
    assert usage_totals(ledger.records("demo")) == {
        "demo": {"vcpu-seconds": 2 * (60 + 85) * 60, "volume-byte-seconds": 10 * 175 * 60}
    }
    assert close_due(tracker, ledger, at(hours=4)).records == []


def uninterrupted() -> list[bytes]:
    tracker, store = UsageTracker(), MemoryLedgerStore()
    metered(tracker)
    close_due(tracker, Ledger(store, KEY_A), at(hours=4))
    return [d for _, d in store.read("demo")]


def test_crash_after_writing_before_saving_state_writes_no_duplicate() -> None:
    tracker, store = UsageTracker(), MemoryLedgerStore()
    metered(tracker)
    saved = tracker.dumps()
    close_due(tracker, Ledger(store, KEY_A), at(hours=2))      # records written, then the crash:
    tracker = UsageTracker.loads(saved)                          # the state saved before is what remains
    ledger = Ledger(store, KEY_A)
    ledger.resume(tracker)
    report = close_due(tracker, ledger, at(hours=4))
    assert report.adopted == []
    assert [d for _, d in store.read("demo")] == uninterrupted()


def test_crash_without_resume_still_neither_drops_nor_duplicates() -> None:
    tracker, store = UsageTracker(), MemoryLedgerStore()
    metered(tracker)
    saved = tracker.dumps()
    close_due(tracker, Ledger(store, KEY_A), at(hours=2))
    tracker = UsageTracker.loads(saved)
    close_due(tracker, Ledger(store, KEY_A), at(hours=4))      # re-closing finds the identical records
    assert [d for _, d in store.read("demo")] == uninterrupted()


def test_a_record_written_before_a_crash_stands_against_late_events() -> None:
    tracker, store = UsageTracker(), MemoryLedgerStore()
    metered(tracker)
    saved = tracker.dumps()
    close_due(tracker, Ledger(store, KEY_A), at(hours=1))
    tracker = UsageTracker.loads(saved)
    tracker.observe("demo", "s2", "Server", {"vcpu-seconds": 1}, True, at(30))  # learned after the restart
    report = close_due(tracker, Ledger(store, KEY_A), at(hours=2))
    assert [c.record_id for c in report.adopted] == ["demo/20250301T000000Z"]
    assert tracker.cursor("demo") == at(hours=2)
    assert Ledger(store, KEY_A).verify(KEYRING).ok
    # s2 is billed from the end of the recorded interval on, never twice
    assert report.records[1].usage["vcpu-seconds"] == 2 * (10 + 20) * 60 + 3600


class FlakyStore(MemoryLedgerStore):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def put(self, record_id: str, data: bytes) -> bool:
        if self.down:
            raise OSError("storage unavailable")
        return super().put(record_id, data)


def test_a_storage_outage_loses_nothing() -> None:
    tracker, store = UsageTracker(), FlakyStore()
    ledger = Ledger(store, KEY_A)
    metered(tracker)
    close_due(tracker, ledger, at(hours=1))
    store.down = True
    with pytest.raises(OSError):
        close_due(tracker, ledger, at(hours=3))
    assert tracker.cursor("demo") == at(hours=1)
    store.down = False
    close_due(tracker, ledger, at(hours=4))
    assert [d for _, d in store.read("demo")] == uninterrupted()


def test_lost_tracker_state_continues_the_chain_without_a_time_gap() -> None:
    store = MemoryLedgerStore()
    tracker = UsageTracker()
    metered(tracker)
    close_due(tracker, Ledger(store, KEY_A), at(hours=2))
    fresh = UsageTracker()                                       # the state is gone
    fresh.observe("demo", "s1", "Server", {"vcpu-seconds": 2}, True, at(hours=5, minutes=30))  # resync
    ledger = Ledger(store, KEY_A)
    ledger.resume(fresh, projects=["demo"])
    close_due(fresh, ledger, at(hours=6))
    records = ledger.records("demo")
    assert [r.body["start"][11:16] for r in records] == ["00:00", "01:00", "02:00", "03:00", "04:00", "05:00"]
    assert verify(records, KEYRING).ok


def test_records_between_two_times() -> None:
    ledger = Ledger(MemoryLedgerStore(), KEY_A)
    for h in range(5):
        ledger.append(usage(h))
    assert [r.seq for r in ledger.records("demo", since=at(hours=1), until=at(hours=3))] == [1, 2]
    assert ledger.projects() == ["demo"]
    assert ledger.head("demo") is not None and ledger.head("demo").seq == 4
    assert ledger.head("nobody") is None


# --------------------------------------------------------------------------- export


def test_csv_export_has_a_row_per_record_and_meter() -> None:
    records = [seal(IntervalUsage("demo", at(0), at(60), {"vcpu-seconds": 5, "volume-byte-seconds": 7},
                                  (ResourceUsage("u", "Server", {"vcpu-seconds": 5, "volume-byte-seconds": 7}),)),
                    None, KEY_A)]
    text = export_csv(records)
    assert text.splitlines() == [
        "project,record,seq,start,end,meter,quantity",
        "demo,demo/20250301T000000Z,0,2025-03-01T00:00:00Z,2025-03-01T01:00:00Z,vcpu-seconds,5",
        "demo,demo/20250301T000000Z,0,2025-03-01T00:00:00Z,2025-03-01T01:00:00Z,volume-byte-seconds,7",
    ]
    detailed = list(csv.DictReader(io.StringIO(export_csv(records, detail=True))))
    assert [(r["resource"], r["kind"], r["meter"], r["quantity"]) for r in detailed] == [
        ("u", "Server", "vcpu-seconds", "5"), ("u", "Server", "volume-byte-seconds", "7")]


def test_json_export_rows_and_totals_keep_integers_exact() -> None:
    big = 2**70
    records = [seal(IntervalUsage("demo", at(0), at(60), {"volume-byte-seconds": big},
                                  (ResourceUsage("u", "Volume", {"volume-byte-seconds": big}),)), None, KEY_A)]
    doc = json.loads(export_json(records, since=at(0), until=at(60)))
    assert doc["since"] == "2025-03-01T00:00:00Z" and doc["until"] == "2025-03-01T01:00:00Z"
    assert doc["rows"][0]["quantity"] == big
    assert doc["totals"] == {"demo": {"volume-byte-seconds": big}}


def test_exports_over_consecutive_periods_partition_the_ledger() -> None:
    records = chain(6) + chain(6, project="other")
    whole = usage_totals(records, since=at(0), until=at(hours=6))
    first = usage_totals(records, since=at(0), until=at(hours=2, minutes=30))
    second = usage_totals(records, since=at(hours=2, minutes=30), until=at(hours=6))
    for project in ("demo", "other"):
        assert first[project]["vcpu-seconds"] + second[project]["vcpu-seconds"] == whole[project]["vcpu-seconds"]
    assert len(export_rows(records, project="other")) == 6
    assert export_rows(records, project="demo", since=at(hours=5))[0]["seq"] == 5


def test_rating_an_export() -> None:
    prices = PriceList.from_dict({"currency": "EUR", "rates": {"vcpu-seconds": {"amount": 5, "per": 3600}}})
    totals = usage_totals(chain(3), project="demo")["demo"]
    assert prices.rate(totals).total == 15  # 3 vCPU-hours and 3 seconds


# --------------------------------------------------------------------------- stores


@pytest.fixture(params=["memory", "directory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> LedgerStore:
    if request.param == "memory":
        return MemoryLedgerStore()
    return DirectoryLedgerStore(tmp_path / "ledger")


def test_store_contract(store: LedgerStore) -> None:
    records = chain(3) + chain(2, project="other")
    assert store.projects() == [] and store.last_id("demo") is None and store.ids("demo") == []
    for r in reversed(records):
        assert store.put(r.id, r.data) is True
    assert store.put(records[0].id, records[0].data) is False
    with pytest.raises(RecordConflict):
        store.put(records[0].id, records[1].data)
    assert store.ids("demo") == [r.id for r in records[:3]]
    assert store.last_id("demo") == records[2].id
    assert store.projects() == ["demo", "other"]
    assert store.get(records[1].id) == records[1].data
    assert store.get("demo/20300101T000000Z") is None
    assert [d for _, d in store.read("demo")] == [r.data for r in records[:3]]
    with pytest.raises(ValueError):
        store.put("../../etc/passwd", b"x")


def test_store_orders_records_across_years(store: LedgerStore) -> None:
    new_year = datetime(2025, 12, 31, 23, 0, tzinfo=UTC)
    u0 = IntervalUsage("demo", new_year, new_year + timedelta(hours=1), {})
    u1 = IntervalUsage("demo", new_year + timedelta(hours=1), new_year + timedelta(hours=2), {})
    r0 = seal(u0, None, KEY_A)
    r1 = seal(u1, ChainHead.of(r0), KEY_A)
    store.put(r1.id, r1.data)
    store.put(r0.id, r0.data)
    assert store.ids("demo") == [r0.id, r1.id] and store.last_id("demo") == r1.id


def test_directory_store_writes_read_only_files_and_ignores_leftovers(tmp_path: Path) -> None:
    store = DirectoryLedgerStore(tmp_path)
    (r0,) = chain(1)
    store.put(r0.id, r0.data)
    path = tmp_path / "demo" / "2025" / "20250301T000000Z.json"
    assert path.read_bytes() == r0.data
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    (path.parent / ".20250301T010000Z.123.abc.tmp").write_bytes(b"partial")  # a crash mid-write
    (tmp_path / "lost+found").mkdir()
    assert store.ids("demo") == [r0.id] and store.projects() == ["demo"]
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp") and "123" not in p.name] == []


def test_directory_store_without_hard_links_still_never_overwrites(tmp_path: Path, monkeypatch) -> None:
    def no_links(*_a, **_k):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    store = DirectoryLedgerStore(tmp_path, fsync=False)
    r0, r1 = chain(2)
    assert store.put(r0.id, r0.data) is True
    assert store.put(r0.id, r0.data) is False
    with pytest.raises(RecordConflict):
        store.put(r0.id, r1.data)


def test_a_ledger_on_a_directory_survives_a_restart(tmp_path: Path) -> None:
    tracker = UsageTracker()
    metered(tracker)
    close_due(tracker, Ledger(DirectoryLedgerStore(tmp_path), KEY_A), at(hours=2))
    reopened = Ledger(DirectoryLedgerStore(tmp_path), KEY_A)
    close_due(tracker, reopened, at(hours=4))
    assert reopened.verify(KEYRING).ok
    assert [r.data for r in reopened.records("demo")] == uninterrupted()


# --------------------------------------------------------------------------- S3 store (stubbed client, no server)


@pytest.fixture
def s3():
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def body(data: bytes):
    from botocore.response import StreamingBody

    return StreamingBody(io.BytesIO(data), len(data))


def test_s3_store_writes_with_if_none_match(s3) -> None:
    client, stubber = s3
    (r0,) = chain(1)
    stubber.add_response("put_object", {}, {"Bucket": "meter", "Key": "ledger/demo/2025/20250301T000000Z.json",
                                            "Body": r0.data, "ContentType": "application/json", "IfNoneMatch": "*"})
    assert S3LedgerStore(client, "meter").put(r0.id, r0.data) is True


@pytest.mark.parametrize(("stored", "outcome"), [("same", False), ("different", RecordConflict)])
def test_s3_store_compares_when_the_object_exists(s3, stored: str, outcome) -> None:
    client, stubber = s3
    r0, r1 = chain(2)
    key = "ledger/demo/2025/20250301T000000Z.json"
    stubber.add_client_error("put_object", "PreconditionFailed", http_status_code=412)
    stubber.add_response("get_object", {"Body": body(r0.data if stored == "same" else r1.data)},
                         {"Bucket": "meter", "Key": key})
    store = S3LedgerStore(client, "meter")
    if outcome is RecordConflict:
        with pytest.raises(RecordConflict):
            store.put(r0.id, r0.data)
    else:
        assert store.put(r0.id, r0.data) is outcome


def test_s3_store_reads_lists_and_finds_the_head(s3) -> None:
    client, stubber = s3
    (r0,) = chain(1)
    stubber.add_client_error("get_object", "NoSuchKey", http_status_code=404)
    stubber.add_response("list_objects_v2", {"IsTruncated": True, "NextContinuationToken": "t", "Contents": [
        {"Key": "ledger/demo/2025/20250301T000000Z.json"}]}, {"Bucket": "meter", "Prefix": "ledger/demo/"})
    stubber.add_response("list_objects_v2", {"IsTruncated": False, "Contents": [
        {"Key": "ledger/demo/2025/20250301T010000Z.json"}, {"Key": "ledger/demo/2025/notes.txt"}]},
        {"Bucket": "meter", "Prefix": "ledger/demo/", "ContinuationToken": "t"})
    stubber.add_response("list_objects_v2", {"IsTruncated": False, "CommonPrefixes": [
        {"Prefix": "ledger/demo/2024/"}, {"Prefix": "ledger/demo/2025/"}]},
        {"Bucket": "meter", "Prefix": "ledger/demo/", "Delimiter": "/"})
    stubber.add_response("list_objects_v2", {"IsTruncated": False, "Contents": [
        {"Key": "ledger/demo/2025/20250301T010000Z.json"}]}, {"Bucket": "meter", "Prefix": "ledger/demo/2025/"})
    stubber.add_response("list_objects_v2", {"IsTruncated": False, "CommonPrefixes": [
        {"Prefix": "ledger/demo/"}, {"Prefix": "ledger/Bad_Name/"}]}, {"Bucket": "meter", "Prefix": "ledger/",
                                                                      "Delimiter": "/"})
    store = S3LedgerStore(client, "meter", prefix="ledger")
    assert store.get(r0.id) is None
    assert store.ids("demo") == ["demo/20250301T000000Z", "demo/20250301T010000Z"]
    assert store.last_id("demo") == "demo/20250301T010000Z"
    assert store.projects() == ["demo"]
