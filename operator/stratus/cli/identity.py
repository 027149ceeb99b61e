"""`stratus token issue|list|revoke` and `stratus catalog`: Keystone from the shell.

They act with the current kubeconfig, as whoever runs them: a member issues tokens for
themselves, an admin for any member. `issue` creates an AccessToken in the project's
namespace, waits for the operator to issue it, and prints the kubeconfig (or writes it
to --out with mode 0600); the token is never printed elsewhere or logged.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import time
import uuid

import click

GROUP, VERSION = "stratus.dev", "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def _fail(exc) -> click.ClickException:
    try:
        message = json.loads(exc.body).get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return click.ClickException(message or str(exc))


def _namespace(project: str) -> str:
    from kubernetes.client.rest import ApiException

    from ..drivers import kube

    try:
        obj = kube.get(API_VERSION, "projects", project)
    except ApiException as exc:
        if exc.status == 403:  # members may not read Projects; the namespace defaults to the name
            return project
        raise _fail(exc) from None
    if obj is None:
        return project
    return (obj.get("status") or {}).get("namespace") or (obj.get("spec") or {}).get("namespace") or project


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


@click.group()
def token() -> None:
    """Issue, list and revoke access tokens (kubeconfigs) for project members."""


@token.command("issue")
@click.option("--project", required=True, help="The project.")
@click.option("--user", required=True, help="The member the token acts for.")
@click.option("--ttl", default="8h", show_default=True, help="Lifetime, e.g. 30m, 8h, 7d.")
@click.option("--name", default=None, help="Name of the AccessToken (default: <user>-<random>).")
@click.option("--out", type=click.Path(path_type=pathlib.Path), default=None, help="Write the kubeconfig here (0600) instead of stdout.")
@click.option("--timeout", default=60, show_default=True, help="Seconds to wait for the token.")
def token_issue(project: str, user: str, ttl: str, name: str | None, out: pathlib.Path | None, timeout: int) -> None:
    """Issue a token and print its kubeconfig."""
    from kubernetes.client.rest import ApiException

    from ..drivers import kube

    ns = _namespace(project)
    slug = "".join(c if c.isalnum() else "-" for c in user.lower()).strip("-")[:40] or "user"
    name = name or f"{slug}-{uuid.uuid4().hex[:6]}"
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AccessToken", "metadata": {"name": name},
            "spec": {"user": user, "ttl": ttl}}
    try:
        kube.create({**body, "metadata": {"name": name, "namespace": ns}}, "accesstokens")
    except ApiException as exc:
        raise _fail(exc) from None
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = (kube.get(API_VERSION, "accesstokens", name, ns) or {}).get("status") or {}
        if status.get("phase") in ("Active", "Failed"):
            break
        time.sleep(0.5)
    ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
    if status.get("phase") != "Active":
        raise click.ClickException(f"token {name} not issued: {ready.get('message') or 'timed out waiting for the operator'}")
    try:
        secret = kube.get("v1", "secrets", status["secretName"], ns)
    except ApiException as exc:
        raise _fail(exc) from None
    if secret is None:
        raise click.ClickException(f"token {name}: Secret {status['secretName']} is gone (revoked)")
    config = base64.b64decode(secret["data"]["kubeconfig"]).decode()
    click.echo(f"issued token {name} for {user} in project {project}, expires {status['expiresAt']}", err=True)
    if out:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(config)
        click.echo(f"kubeconfig written to {out}", err=True)
    else:
        click.echo(config, nl=False)


@token.command("list")
@click.option("--project", required=True)
def token_list(project: str) -> None:
    """List the project's tokens (never the tokens themselves)."""
    from kubernetes.client.rest import ApiException

    from ..drivers import kube

    ns = _namespace(project)
    try:
        items = kube.list_(API_VERSION, "accesstokens", ns)
    except ApiException as exc:
        raise _fail(exc) from None
    rows = [[t["metadata"]["name"], t["spec"]["user"], (t.get("status") or {}).get("role", ""),
             (t.get("status") or {}).get("phase", ""), (t.get("status") or {}).get("expiresAt", "")] for t in items]
    click.echo(_table(rows, ["NAME", "USER", "ROLE", "PHASE", "EXPIRES"]))


@token.command("revoke")
@click.option("--project", required=True)
@click.argument("name")
@click.option("--timeout", default=60, show_default=True)
def token_revoke(project: str, name: str, timeout: int) -> None:
    """Revoke a token: it stops working as soon as this returns."""
    from kubernetes.client.rest import ApiException

    from ..drivers import kube

    ns = _namespace(project)
    try:
        if not kube.delete(API_VERSION, "accesstokens", name, ns, propagation="Background"):
            raise click.ClickException(f"no token {name} in project {project}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if kube.get(API_VERSION, "accesstokens", name, ns) is None:
                click.echo(f"token {name} revoked")
                return
            time.sleep(0.3)
    except ApiException as exc:
        raise _fail(exc) from None
    raise click.ClickException(f"token {name} is still being revoked; is the operator running?")


@click.command()
def catalog() -> None:
    """Print the service catalog."""
    from kubernetes.client.rest import ApiException

    from ..drivers import kube

    try:
        obj = kube.get(API_VERSION, "catalogs", "default")
    except ApiException as exc:
        raise _fail(exc) from None
    if obj is None:
        raise click.ClickException("no catalog yet: is the operator running?")
    rows = [[e["name"], e.get("type", ""), e.get("url", ""), "yes" if e.get("ready") else "no"]
            for e in (obj.get("status") or {}).get("endpoints") or []]
    click.echo(_table(rows, ["NAME", "TYPE", "URL", "READY"]))


#: Registered by stratus.cli.
COMMANDS = (token, catalog)
