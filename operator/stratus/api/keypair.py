"""KeyPair (Nova): an SSH public key that servers get through cloud-init.

The schema checks the shape of the key (algorithm, base64 body); the operator parses it
for real with `cryptography` and reports the fingerprint (MD5, as Nova shows it, and
SHA256, as OpenSSH shows it) or an InvalidPublicKey condition.
"""

from __future__ import annotations

from kube_custom_resource import CustomResource
from pydantic import Field

from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, StatusBase, printer
from .registry import VERSION

SSH_KEY_PATTERN = r"^(ssh-rsa|ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521) [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$"


class KeyPairSpec(BaseModel):
    public_key: str = Field(
        ...,
        max_length=16384,
        pattern=SSH_KEY_PATTERN,
        description="An OpenSSH public key line: algorithm, base64 key, optional comment.",
    )


class KeyPairStatus(StatusBase):
    """phase: Available or Invalid."""

    fingerprint: str = Field("", description="MD5 fingerprint, colon-separated hex (as Nova shows it).")
    fingerprint_sha256: str = Field("", description="SHA256 fingerprint (as OpenSSH shows it).")
    key_type: str = Field("", description="The key's algorithm.")


class KeyPair(
    CustomResource,
    version=VERSION,
    short_names=["kp"],
    subresources={"status": {}},
    printer_columns=[
        printer("Type", ".status.keyType"),
        printer("Fingerprint", ".status.fingerprintSha256"),
        PHASE_COLUMN,
        READY_COLUMN,
    ],
):
    """An SSH public key for servers."""

    spec: KeyPairSpec
    status: KeyPairStatus = Field(default_factory=KeyPairStatus)
