"""`stratus image`: query and download images as a project member would.

    stratus image list [-n NS] [--property k=v ...] [--visibility public|shared|private]
    stratus image download NAME [-n NS] -o FILE [--token TOKEN]

`list` shows the images visible from project (namespace) NS: its own, the public ones
and those shared with it (core.image.visible_to), filtered by properties (Glance's
snake_case names such as os_distro, or any extra property) and visibility. It reads
Images through the current kubeconfig, so what it can list is what RBAC allows.

`download` streams the bytes from the image service to FILE and checks the sha256
against the Image's status before it renames the file into place; a partial or corrupt
download never appears under FILE. Without --token it uses the signed URL from the
Image's status (reading the Image is the permission); with --token it presents that
bearer token, and the service decides from the image's visibility.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import urllib.error
import urllib.request

import click

GROUP, VERSION = "stratus.dev", "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def _current_namespace() -> str:
    import kubernetes

    try:
        _, ctx = kubernetes.config.list_kube_config_contexts()
        return (ctx.get("context") or {}).get("namespace") or "default"
    except Exception:  # noqa: BLE001
        return "default"


def _properties(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r}: use key=value", param_hint="--property")
        out[key] = val
    return out


@click.group("image")
def image_group() -> None:
    """Images (Glance): list what a project can see, download the bytes."""


@image_group.command("list")
@click.option("-n", "--namespace", help="The project (namespace) to look from; the context's by default.")
@click.option("--property", "props", multiple=True, help="key=value (repeatable), e.g. os_distro=ubuntu.")
@click.option("--visibility", type=click.Choice(["public", "shared", "private"]), help="Only images of this visibility.")
@click.option("-o", "--output", type=click.Choice(["table", "name"]), default="table", show_default=True)
def list_images(namespace: str | None, props: tuple[str, ...], visibility: str | None, output: str) -> None:
    """Images visible from a project, filtered by properties and visibility."""
    from ..core.image import matches_properties, visible_to

    namespace = namespace or _current_namespace()
    wanted = _properties(props)
    from ..drivers import kube

    items = kube.list_(API_VERSION, "images")
    rows = []
    for img in items:
        spec, meta, status = img["spec"], img["metadata"], img.get("status") or {}
        vis = spec.get("visibility", "private")
        if not visible_to(meta["namespace"], vis, spec.get("sharedWith"), namespace):
            continue
        if visibility and vis != visibility:
            continue
        if not matches_properties(spec.get("properties") or {}, wanted):
            continue
        rows.append((meta["namespace"], meta["name"], status.get("phase", ""), vis, spec.get("diskFormat", ""),
                     str(status.get("size") or ""), (spec.get("properties") or {}).get("osDistro", "")))
    rows.sort()
    if output == "name":
        for row in rows:
            click.echo(f"{row[0]}/{row[1]}")
        return
    header = ("NAMESPACE", "NAME", "STATUS", "VISIBILITY", "DISK FORMAT", "SIZE", "DISTRO")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


@image_group.command("download")
@click.argument("name")
@click.option("-n", "--namespace", help="The image's namespace; the context's by default.")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False, path_type=pathlib.Path))
@click.option("--token", envvar="STRATUS_TOKEN", help="A Kubernetes bearer token to present to the image service.")
def download(name: str, namespace: str | None, out: pathlib.Path, token: str | None) -> None:
    """Download an active image to a file, checking its sha256."""
    namespace = namespace or _current_namespace()
    from ..drivers import kube

    img = kube.get(API_VERSION, "images", name, namespace)
    if img is None:
        raise click.ClickException(f"no image {namespace}/{name}")
    status = img.get("status") or {}
    if status.get("phase") != "active":
        raise click.ClickException(f"image {namespace}/{name} is {status.get('phase') or 'queued'}, not active")
    headers = {}
    if token:
        url = status.get("downloadUrl")
        headers["Authorization"] = f"Bearer {token}"
    else:
        url = ((status.get("dataVolumeSource") or {}).get("http") or {}).get("url")
    if not url:
        raise click.ClickException(f"image {namespace}/{name} has no download URL (is the image service running?)")
    partial = out.with_name(out.name + ".part")
    sha = hashlib.sha256()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as resp, open(partial, "wb") as f:  # noqa: S310
            while chunk := resp.read(1024 * 1024):
                sha.update(chunk)
                f.write(chunk)
    except urllib.error.HTTPError as exc:
        partial.unlink(missing_ok=True)
        raise click.ClickException(f"the image service answered {exc.code}: {exc.read().decode(errors='replace')}") from None
    if sha.hexdigest() != status.get("checksum"):
        partial.unlink(missing_ok=True)
        raise click.ClickException("the downloaded bytes do not match the image's checksum; try again")
    os.replace(partial, out)
    click.echo(f"{out}: {out.stat().st_size} bytes, sha256 {sha.hexdigest()}")


#: Registered by stratus.cli.
COMMANDS = (image_group,)
