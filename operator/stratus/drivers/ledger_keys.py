"""The ledger's signing keys in the cluster: the Secret that holds them and the public
JWK Set that publishes them.

``stratus-ledger-signing-key`` (Secret, the operator's namespace): ``current`` names the
key id that signs, ``<key id>.pem`` holds each private key (PKCS#8). Rotation adds a key
and moves ``current``; old keys stay so their public halves keep being published.
``stratus-ledger-keys`` (ConfigMap): ``jwks.json`` and ``current``, which the service
catalog and ``stratus meter verify`` read. Key material never reaches logs, events,
status or metrics (the ``Signer`` repr hides it).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping

from kubernetes.client.rest import ApiException

from ..core.ledger import Keyring, Signer
from . import kube

log = logging.getLogger("stratus.metering")

SIGNING_SECRET = "stratus-ledger-signing-key"
KEYS_CONFIGMAP = "stratus-ledger-keys"


def load_keys(namespace: str, *, create: bool = True) -> tuple[Signer, Keyring, str]:
    """The current signer, a keyring of every key in the Secret, and the Secret's version.

    Creates the Secret with a fresh key when absent (a racing replica's Secret wins).
    """
    api = kube.core()
    try:
        secret = api.read_namespaced_secret(SIGNING_SECRET, namespace)
    except ApiException as e:
        if e.status != 404 or not create:
            raise
        signer = Signer.generate()
        body = {
            "metadata": {"name": SIGNING_SECRET, "labels": {"app.kubernetes.io/part-of": "stratus"}},
            "type": "Opaque",
            "data": {
                "current": base64.b64encode(signer.key_id.encode()).decode(),
                f"{signer.key_id}.pem": base64.b64encode(signer.private_pem()).decode(),
            },
        }
        try:
            api.create_namespaced_secret(namespace, body)
            log.info("created the ledger signing key %s in Secret %s/%s", signer.key_id, namespace, SIGNING_SECRET)
        except ApiException as e2:
            if e2.status != 409:
                raise
        secret = api.read_namespaced_secret(SIGNING_SECRET, namespace)
    return keys_from_secret_data(secret.data or {}) + (secret.metadata.resource_version,)


def read_keys_if_changed(namespace: str, version: str) -> tuple[Signer, Keyring, str] | None:
    """The keys again when the Secret changed since ``version`` (a rotation), else None."""
    secret = kube.core().read_namespaced_secret(SIGNING_SECRET, namespace)
    if secret.metadata.resource_version == version:
        return None
    return keys_from_secret_data(secret.data or {}) + (secret.metadata.resource_version,)


def keys_from_secret_data(data: Mapping[str, str]) -> tuple[Signer, Keyring]:
    current = base64.b64decode(data.get("current") or "").decode().strip()
    ring = Keyring()
    signer = None
    for k, v in sorted(data.items()):
        if not k.endswith(".pem"):
            continue
        s = Signer.from_pem(base64.b64decode(v))
        ring.add(s.public_key)
        if s.key_id == current:
            signer = s
    if signer is None:
        raise ValueError(f"Secret {SIGNING_SECRET}: 'current' names no key it holds")
    return signer, ring


def publish_keys(namespace: str, keyring: Keyring, current: str) -> None:
    """The public JWK Set in ConfigMap stratus-ledger-keys (the catalog reads it)."""
    kube.apply_core({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": KEYS_CONFIGMAP, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "stratus"}},
        "data": {"jwks.json": json.dumps(keyring.to_jwks(), sort_keys=True, indent=2) + "\n", "current": current},
    })


def published_keyring(namespace: str) -> Keyring:
    cm = kube.core().read_namespaced_config_map(KEYS_CONFIGMAP, namespace)
    return Keyring.from_jwks(json.loads((cm.data or {})["jwks.json"]))
