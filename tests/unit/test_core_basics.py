"""Pure helpers of the foundation: quantities, conditions, key fingerprints."""

from __future__ import annotations

import pytest

from stratus.core.conditions import get_condition, set_condition
from stratus.core.quantity import format_bytes, parse_bytes, parse_millicpu


@pytest.mark.parametrize(
    "text, expected",
    [("4Gi", 4 << 30), ("512Mi", 512 << 20), ("1", 1), ("2k", 2000), ("3G", 3 * 10**9), (7, 7)],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["1.5Gi", "4GB", "-1", "", "Gi"])
def test_parse_bytes_refuses_and_names_the_value(text):
    with pytest.raises(ValueError, match="quantity of bytes"):
        parse_bytes(text)


@pytest.mark.parametrize("text, expected", [("2", 2000), ("500m", 500), ("0.5", 500), ("1.25", 1250), (3, 3000)])
def test_parse_millicpu(text, expected):
    assert parse_millicpu(text) == expected


@pytest.mark.parametrize("n, text", [(4 << 30, "4Gi"), (1536 << 20, "1536Mi"), (1000, "1000"), (1 << 40, "1Ti")])
def test_format_bytes_round_trips(n, text):
    assert format_bytes(n) == text and parse_bytes(text) == n


def test_condition_transition_time_moves_only_when_status_changes():
    conds = set_condition([], "Ready", False, "Creating", "x", 1, at="t1")
    conds = set_condition(conds, "Ready", False, "Scheduling", "y", 1, at="t2")
    assert get_condition(conds, "Ready")["lastTransitionTime"] == "t1"
    assert get_condition(conds, "Ready")["reason"] == "Scheduling"
    conds = set_condition(conds, "Ready", True, "Running", "z", 2, at="t3")
    cond = get_condition(conds, "Ready")
    assert (cond["lastTransitionTime"], cond["status"], cond["observedGeneration"]) == ("t3", "True", 2)


def test_set_condition_keeps_others_and_does_not_mutate_input():
    original = [{"type": "A", "status": "True", "reason": "X", "message": "", "lastTransitionTime": "t0"}]
    out = set_condition(original, "Ready", True, "Ok", at="t1")
    assert [c["type"] for c in out] == ["A", "Ready"]
    assert len(original) == 1


def test_keypair_fingerprints_match_openssh():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    import base64
    import hashlib

    from stratus.controllers.keypair import fingerprints

    pub = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    key_type, md5, sha = fingerprints(pub + " me@host")
    blob = base64.b64decode(pub.split()[1])
    assert key_type == "ssh-ed25519"
    assert sha == "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert md5.count(":") == 15
    with pytest.raises(ValueError, match="spec.publicKey"):
        fingerprints("ssh-ed25519 AAAAnotakey")


@pytest.mark.parametrize("bits, accepted", [(1024, False), (2047, False), (2048, True), (3072, True)])
def test_rsa_keys_under_2048_bits_are_refused_as_weak(bits, accepted):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from stratus.controllers.keypair import WeakKey, fingerprints

    pub = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    if accepted:
        assert fingerprints(pub)[0] == "ssh-rsa"
    else:
        with pytest.raises(WeakKey, match=f"{bits}-bit RSA key"):
            fingerprints(pub)
