"""Identity fixtures for integration tests: the Stratus roles installed from the chart,
and clients that act as a given user through impersonation (the API server applies
that user's RBAC, admission and quota, exactly as for a real sign-in).

Import into conftest (`from .identity import *`) or into a test module.
"""

from __future__ import annotations

import pathlib
import uuid

from kubernetes.client.rest import ApiException
import pytest

from .kube import Kube, wait_for

REPO = pathlib.Path(__file__).resolve().parents[2]
ROLES = REPO / "charts" / "stratus" / "templates" / "roles.yaml"


@pytest.fixture(scope="session")
def stratus_roles(kube, crds) -> None:
    """The stratus-admin/member/reader ClusterRoles and the admin-only policy, applied
    from the same file the chart ships."""
    res = kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROLES))
    assert res.returncode == 0, res.stderr


class UserKube(Kube):
    """A Kube whose every request is made as `user` (with `groups`), never as admin."""

    def __init__(self, kubeconfig: str, user: str, groups: tuple[str, ...] = ()):
        super().__init__(kubeconfig)
        self.user = user
        self.api.set_default_header("Impersonate-User", user)
        if groups:
            # The client sends one value per header name; one extra group is enough here.
            self.api.set_default_header("Impersonate-Group", groups[0])
        self._as = ["--as", user, *([f"--as-group={groups[0]}"] if groups else [])]

    def kubectl(self, *args, input=None, check=False):
        return super().kubectl(*self._as, *args, input=input, check=check)


class TokenKube(Kube):
    """A Kube from a kubeconfig text (an issued token): the API server sees only the token."""

    def __init__(self, kubeconfig_text: str, path: pathlib.Path):
        path.write_text(kubeconfig_text)
        path.chmod(0o600)
        super().__init__(str(path))


@pytest.fixture(scope="session")
def as_user(kube):
    def make(user: str, *groups: str) -> UserKube:
        return UserKube(kube.kubeconfig, user, tuple(groups))

    return make


@pytest.fixture
def projects(kube, operator, stratus_roles):
    """Create Projects (deleted at the end of the test, waiting for them to go)."""
    made: list[str] = []

    def make(members: list[dict] | None = None, prefix: str = "p", wait: bool = True, **spec) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        kube.create("projects", {"kind": "Project", "metadata": {"name": name},
                                 "spec": {"members": members or [], **spec}})
        made.append(name)
        if wait:
            wait_for(lambda: project_ready(kube, name), 60, what=f"Project {name} Active")
        return name

    yield make
    for name in made:
        kube.delete("projects", name)
    for name in made:
        wait_for(lambda: kube.get("projects", name) is None, 120, what=f"Project {name} deleted")


def project_ready(kube, name: str) -> dict | None:
    p = kube.get("projects", name)
    return p if p and p.get("status", {}).get("phase") == "Active" and kube.condition(p).get("status") == "True" else None


def forbidden(fn) -> str:
    """Run `fn`, which must be refused with 403; return the API server's message."""
    import json

    try:
        fn()
    except ApiException as exc:
        assert exc.status == 403, f"expected 403, got {exc.status}: {exc.body}"
        return json.loads(exc.body)["message"]
    raise AssertionError("the request was allowed")


__all__ = ["stratus_roles", "as_user", "projects", "UserKube", "TokenKube", "project_ready", "forbidden"]
