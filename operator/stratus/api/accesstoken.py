"""AccessToken (Keystone tokens): a bound, expiring token for one project member,
delivered as a ready kubeconfig in a Secret only that member (and project admins) can read.

The operator issues it with the TokenRequest API for the member's own ServiceAccount in
the project namespace (which the Project binds with the member's role), bound to the
token's Secret. Revoking is deleting the AccessToken: its Secret is deleted at once, and
with it every token bound to it stops authenticating (the API server checks the bound
object on each request). The token itself is never in status, events or logs.

Phases: Active, Expired, Failed.
"""

from __future__ import annotations

import enum

from kube_custom_resource import CustomResource
from pydantic import Field

from ..core.identity import DURATION_PATTERN
from .common import PHASE_COLUMN, READY_COLUMN, BaseModel, StatusBase, printer
from .registry import GROUP, VERSION


class TokenPhase(str, enum.Enum):
    ACTIVE = "Active"
    EXPIRED = "Expired"
    FAILED = "Failed"


class AccessTokenSpec(BaseModel):
    model_config = {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "an AccessToken cannot be changed; revoke it and issue a new one"}
            ]
        }
    }

    user: str = Field(..., min_length=1, max_length=253, description="The project member (kind User) the token acts for.")
    ttl: str = Field("8h", pattern=DURATION_PATTERN, max_length=32,
                     description="How long the token lives, e.g. 30m, 8h or 7d (at least 10m, at most 30d).")
    description: str = Field("", max_length=1024, description="What the token is for.")


class AccessTokenStatus(StatusBase):
    """See the module docstring for phases."""

    service_account: str = Field("", description="The ServiceAccount the token acts as.")
    secret_name: str = Field("", description="The Secret holding the kubeconfig (key `kubeconfig`).")
    role: str = Field("", description="The member's role when the token was issued.")
    expires_at: str = Field("", description="When the token stops working (RFC 3339).")
    username: str = Field("", description="The identity the API server sees, as TokenReview reports it.")


class AccessToken(
    CustomResource,
    version=VERSION,
    short_names=["atok"],
    subresources={"status": {}},
    printer_columns=[
        printer("User", ".spec.user"),
        printer("Expires", ".status.expiresAt"),
        printer("Secret", ".status.secretName"),
        PHASE_COLUMN,
        READY_COLUMN,
    ],
):
    """A bound, expiring access token for a project member."""

    spec: AccessTokenSpec
    status: AccessTokenStatus = Field(default_factory=AccessTokenStatus)


def sample(name: str = "alice-cli", user: str = "alice", ttl: str = "8h") -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AccessToken", "metadata": {"name": name},
            "spec": {"user": user, "ttl": ttl}}
