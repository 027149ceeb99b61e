"""`stratus stack`: Heat-style commands over the Stack kind.

    stratus stack create NAME -t TEMPLATE [-e ENV] [-f FILE ...] [--parameter k=v ...] [-n NS] [--no-rollback]
    stratus stack update NAME [-t TEMPLATE] [-e ENV] [-f FILE ...] [--parameter k=v ...] [-n NS]
    stratus stack preview NAME -t TEMPLATE [...]     what create/update would add, change, replace, delete
    stratus stack show NAME [-n NS]                  state, resources, outputs
    stratus stack outputs NAME [-n NS]
    stratus stack events NAME [-n NS]
    stratus stack retry NAME [-n NS]                 retry a failed stack with the template it has
    stratus stack delete NAME [-n NS] [--wait]

Files (`-f`) are given by path and named as the template refers to them (the path as
given, or NAME=PATH). `preview` runs the same engine the operator runs, locally, against
the stack's children as they are: a dry run that changes nothing.
"""

from __future__ import annotations

import json
import pathlib
import time

import click

from ..api.registry import API_VERSION

PLURAL = "stacks"


def _kube():
    from ..drivers import kube  # imported when a command runs: `stratus --help` stays quick

    return kube


def _get(ns: str, name: str) -> dict:
    obj = _kube().get(API_VERSION, PLURAL, name, ns)
    if obj is None:
        raise click.ClickException(f"no stack {name} in {ns}")
    return obj


def _namespace(namespace: str | None) -> str:
    from .image import _current_namespace

    return namespace or _current_namespace()


def _params(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r}: use name=value", param_hint="--parameter")
        out[key] = val
    return out


def _files(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        path = path if sep else name
        out[name] = pathlib.Path(path).read_text()
    return out


def _spec(template, environment, files, parameters, rollback=None) -> dict:
    spec: dict = {}
    if template:
        spec["template"] = pathlib.Path(template).read_text()
    if environment:
        spec["environment"] = pathlib.Path(environment).read_text()
    if files:
        spec["files"] = _files(files)
    if parameters:
        spec["parameters"] = _params(parameters)
    if rollback is not None:
        spec["rollback"] = rollback
    return spec


def _common(fn):
    for option in reversed([
        click.option("-n", "--namespace", help="The project (namespace); the context's by default."),
        click.option("-t", "--template", "template", type=click.Path(exists=True, dir_okay=False), help="The HOT template."),
        click.option("-e", "--environment", type=click.Path(exists=True, dir_okay=False), help="A Heat environment file."),
        click.option("-f", "--file", "files", multiple=True, help="A file the template reads: PATH or NAME=PATH (repeatable)."),
        click.option("-P", "--parameter", "parameters", multiple=True, help="name=value (repeatable)."),
    ]):
        fn = option(fn)
    return fn


@click.group("stack")
def stack_group() -> None:
    """Orchestration (Heat): stacks from HOT templates."""


@stack_group.command("create")
@click.argument("name")
@_common
@click.option("--no-rollback", is_flag=True, help="Leave a failed create as CREATE_FAILED instead of deleting it.")
@click.option("--wait/--no-wait", default=False, help="Wait for COMPLETE or FAILED.")
def create(name, namespace, template, environment, files, parameters, no_rollback, wait) -> None:
    """Create a stack."""
    if not template:
        raise click.UsageError("create needs --template")
    ns = _namespace(namespace)
    body = {"apiVersion": API_VERSION, "kind": "Stack", "metadata": {"name": name, "namespace": ns},
            "spec": _spec(template, environment, files, parameters, False if no_rollback else None)}
    if _kube().create(body, PLURAL) is None:
        raise click.ClickException(f"stack {name} already exists in {ns}; use `stratus stack update`")
    click.echo(f"stack {name} created in {ns}")
    if wait:
        _wait(ns, name)


@stack_group.command("update")
@click.argument("name")
@_common
@click.option("--wait/--no-wait", default=False, help="Wait for COMPLETE or FAILED.")
def update(name, namespace, template, environment, files, parameters, wait) -> None:
    """Update a stack: a new template and/or parameters (others are kept)."""
    ns = _namespace(namespace)
    spec = _spec(template, environment, files, parameters)
    if not spec:
        raise click.UsageError("nothing to update: give --template, --environment, --file or --parameter")
    if _kube().patch(API_VERSION, PLURAL, name, {"spec": spec}, ns) is None:
        raise click.ClickException(f"no stack {name} in {ns}")
    click.echo(f"stack {name} updated")
    if wait:
        _wait(ns, name)


def _wait(ns, name, timeout=1800) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = _get(ns, name)
        st = obj.get("status") or {}
        if st.get("observedGeneration") == obj["metadata"].get("generation") and \
                st.get("phase", "").endswith(("_COMPLETE", "_FAILED")):
            click.echo(f"{st['phase']}: {st.get('stackStatusReason', '')}")
            if st["phase"].endswith("_FAILED") or st["phase"].startswith("ROLLBACK"):
                raise SystemExit(1)
            return
        time.sleep(2)
    raise click.ClickException("timed out waiting for the stack")


@stack_group.command("retry")
@click.argument("name")
@click.option("-n", "--namespace")
def retry(name, namespace) -> None:
    """Retry a FAILED or rolled-back stack with the template it has (bumps spec.retry)."""
    ns = _namespace(namespace)
    obj = _get(ns, name)
    _kube().patch(API_VERSION, PLURAL, name, {"spec": {"retry": int(obj["spec"].get("retry", 0)) + 1}}, ns)
    click.echo(f"stack {name}: retrying")


@stack_group.command("preview")
@click.argument("name")
@_common
def preview_cmd(name, namespace, template, environment, files, parameters) -> None:
    """What create or update would do, without doing it (a dry run)."""
    from ..controllers import stack as ctl
    from ..core import heat

    ns = _namespace(namespace)
    current = _kube().get(API_VERSION, PLURAL, name, ns) or {"metadata": {"name": name, "namespace": ns}, "spec": {}}
    spec = {**(current.get("spec") or {}), **_spec(template, environment, files, parameters)}
    if "template" not in spec and "templateFrom" not in spec:
        raise click.UsageError("preview of a new stack needs --template")
    body = {"metadata": {**current["metadata"]}, "spec": spec}
    stack = ctl.load(body)
    if not stack.ok:
        for error in stack.errors:
            click.echo(f"error: {error}", err=True)
        raise SystemExit(1)
    observed = ctl.observed(name, ns) if current.get("status") else {}
    for row in heat.preview(stack, observed):
        click.echo(f"{row['action']:<10} {row['resource']:<30} {row['type']:<28} {', '.join(row.get('objects') or [])}"
                   + (f"  {row['detail']}" if row.get("detail") else ""))
    for warning in stack.warnings:
        click.echo(f"warning: {warning}", err=True)


@stack_group.command("show")
@click.argument("name")
@click.option("-n", "--namespace")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def show(name, namespace, output) -> None:
    """The stack's state, resources and outputs."""
    st = _get(_namespace(namespace), name).get("status") or {}
    if output == "json":
        click.echo(json.dumps({"name": name, "status": st.get("phase"), "reason": st.get("stackStatusReason"),
                               "resources": st.get("resources", []), "outputs": st.get("outputs", [])}, indent=2))
        return
    click.echo(f"{name}: {st.get('phase', 'PENDING')}  {st.get('stackStatusReason', '')}")
    for r in st.get("resources") or []:
        click.echo(f"  {r['name']:<30} {r['type']:<28} {r['state']:<20} {r.get('reason', '')}")
    for o in st.get("outputs") or []:
        click.echo(f"  output {o['name']}: " + ("(secret)" if o.get("secret") else o.get("value") or o.get("error", "")))


@stack_group.command("outputs")
@click.argument("name")
@click.option("-n", "--namespace")
@click.option("--show-secret", is_flag=True, help="Also print outputs kept in the outputs Secret (needs read access to it).")
def outputs(name, namespace, show_secret) -> None:
    """The stack's outputs, one per line (name, value)."""
    ns = _namespace(namespace)
    st = _get(ns, name).get("status") or {}
    secret = {}
    if show_secret and st.get("outputsSecret"):
        secret = _kube().secret_data(st["outputsSecret"], ns) or {}
    for o in st.get("outputs") or []:
        value = secret.get(o["name"], "(secret)") if o.get("secret") else o.get("value") or f"(error: {o.get('error')})"
        click.echo(f"{o['name']}\t{value}")


@stack_group.command("events")
@click.argument("name")
@click.option("-n", "--namespace")
def events(name, namespace) -> None:
    """The stack's events: its own and its resources' state changes, oldest first."""
    ns = _namespace(namespace)
    items = _kube().list_("v1", "events", ns, field_selector=f"involvedObject.name={name},involvedObject.kind=Stack")

    def when(ev: dict) -> str:  # RFC 3339 strings sort as times; eventTime has microseconds
        return (ev.get("lastTimestamp") or ev.get("eventTime") or ev["metadata"]["creationTimestamp"])[:19] + "Z"

    for ev in sorted(items, key=when):
        click.echo(f"{when(ev)}  {ev.get('reason', ''):<32} {ev.get('message', '')}")


@stack_group.command("delete")
@click.argument("name")
@click.option("-n", "--namespace")
@click.option("--wait/--no-wait", default=False, help="Wait until the stack and its resources are gone.")
def delete(name, namespace, wait) -> None:
    """Delete a stack (its resources in reverse dependency order; Retain ones are kept)."""
    ns = _namespace(namespace)
    if not _kube().delete(API_VERSION, PLURAL, name, ns, propagation="Background"):
        raise click.ClickException(f"no stack {name} in {ns}")
    click.echo(f"stack {name} deleting")
    deadline = time.monotonic() + 1800
    while wait and time.monotonic() < deadline:
        if _kube().get(API_VERSION, PLURAL, name, ns) is None:
            click.echo("deleted")
            return
        time.sleep(2)


COMMANDS = [stack_group]
