"""KeyPair: the operator parses the key for real and reports its fingerprints."""

from __future__ import annotations

import base64
import hashlib

import kopf
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..api.keypair import KeyPair
from ..api.registry import GROUP, VERSION
from ..core.conditions import set_condition
from ..drivers import kube


#: The smallest RSA modulus accepted (NIST SP 800-131A: 1024-bit RSA is disallowed).
MIN_RSA_BITS = 2048


class WeakKey(ValueError):
    """The key parses but is too weak to accept."""


def fingerprints(public_key: str) -> tuple[str, str, str]:
    """(key type, MD5 colon hex, SHA256 base64) of an OpenSSH public key line.
    Raises ValueError with a human message when the key does not parse, WeakKey when it
    is an RSA key under MIN_RSA_BITS."""
    try:
        key = serialization.load_ssh_public_key(public_key.strip().encode())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"spec.publicKey is not a valid OpenSSH public key: {exc}") from exc
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise WeakKey(f"spec.publicKey is a {key.key_size}-bit RSA key, too weak to accept (at least {MIN_RSA_BITS} bits); "
                      "make a new one with ssh-keygen -t ed25519 (or -t rsa -b 4096)")
    key_type, blob_b64 = public_key.split()[:2]
    blob = base64.b64decode(blob_b64)
    md5 = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    sha = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return key_type, ":".join(md5[i : i + 2] for i in range(0, len(md5), 2)), f"SHA256:{sha}"


@kopf.on.resume(GROUP, VERSION, "keypairs")
@kopf.on.create(GROUP, VERSION, "keypairs")
@kopf.on.update(GROUP, VERSION, "keypairs", field="spec")
def reconcile_keypair(body, patch, **_) -> None:
    kp = KeyPair.model_validate(kube.plain(body))
    generation = body["metadata"].get("generation", 0)
    conditions = body.get("status", {}).get("conditions")
    try:
        key_type, md5, sha = fingerprints(kp.spec.public_key)
    except WeakKey as exc:
        patch.status.update(phase="Invalid", fingerprint="", fingerprintSha256="", keyType="")
        patch.status["conditions"] = set_condition(conditions, "Ready", False, "WeakPublicKey", str(exc), generation)
    except ValueError as exc:
        patch.status.update(phase="Invalid", fingerprint="", fingerprintSha256="", keyType="")
        patch.status["conditions"] = set_condition(
            conditions, "Ready", False, "InvalidPublicKey", f"{exc}. Paste the whole line of your .pub file.", generation
        )
    else:
        patch.status.update(phase="Available", fingerprint=md5, fingerprintSha256=sha, keyType=key_type)
        patch.status["conditions"] = set_condition(conditions, "Ready", True, "Available", "The key can be injected into servers", generation)
    patch.status["observedGeneration"] = generation
