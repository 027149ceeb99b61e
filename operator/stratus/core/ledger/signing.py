"""Ed25519 keys of the ledger: the signer, public keys with their ids, the verifier's keyring.

Design decisions
================

Keys.
    The key id is the RFC 7638 JWK thumbprint of the Ed25519 public key (base64url
    SHA-256 of ``{"crv":"Ed25519","kty":"OKP","x":...}``), computable by anyone from the
    key alone. Public keys are published as a JWK Set (:meth:`Keyring.to_jwks`).
    Rotation: sign new records with the new key and keep the old public keys in the
    keyring; every record names its key, so old records stay verifiable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .canonical import _b64u, _unb64u, canonical_json

__all__ = ["Keyring", "PublicKey", "Signer"]


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key (32 raw bytes) and its key id."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> str:
        """RFC 7638 JWK thumbprint (SHA-256, base64url)."""
        return _b64u(hashlib.sha256(canonical_json({"crv": "Ed25519", "kty": "OKP", "x": _b64u(self.raw)})).digest())

    def _key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.raw)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self._key().verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def pem(self) -> bytes:
        return self._key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def jwk(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64u(self.raw), "kid": self.key_id, "alg": "EdDSA", "use": "sig"}

    @classmethod
    def from_pem(cls, pem: bytes | str) -> PublicKey:
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> PublicKey:
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise ValueError("not an Ed25519 JWK")
        key = cls(_unb64u(jwk["x"]))
        if "kid" in jwk and jwk["kid"] != key.key_id:
            raise ValueError(f"JWK kid {jwk['kid']!r} is not the key's thumbprint {key.key_id!r}")
        return key


class Signer:
    """An Ed25519 signing key, kept in a Kubernetes Secret as PEM (PKCS#8) or 32 raw bytes."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = PublicKey(
            private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )
        self.key_id = self.public_key.key_id

    def __repr__(self) -> str:  # never show key material
        return f"Signer(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes | str, password: bytes | None = None) -> Signer:
        key = serialization.load_pem_private_key(pem.encode() if isinstance(pem, str) else pem, password)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        return cls(key)

    @classmethod
    def from_raw(cls, seed: bytes) -> Signer:
        if len(seed) != 32:
            raise ValueError("an Ed25519 private key is a 32-byte seed")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def private_raw(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


class Keyring:
    """Public keys by key id: what a verifier trusts. Old keys stay after a rotation."""

    def __init__(self, keys: Iterable[PublicKey | Signer] = ()) -> None:
        self._keys: dict[str, PublicKey] = {}
        for k in keys:
            self.add(k)

    def add(self, key: PublicKey | Signer) -> str:
        pk = key.public_key if isinstance(key, Signer) else key
        self._keys[pk.key_id] = pk
        return pk.key_id

    def get(self, key_id: str) -> PublicKey | None:
        return self._keys.get(key_id)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def to_jwks(self) -> dict[str, Any]:
        return {"keys": [self._keys[k].jwk() for k in sorted(self._keys)]}

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> Keyring:
        return cls(PublicKey.from_jwk(j) for j in jwks["keys"])

    @classmethod
    def from_pems(cls, pems: Iterable[bytes | str]) -> Keyring:
        return cls(PublicKey.from_pem(p) for p in pems)
