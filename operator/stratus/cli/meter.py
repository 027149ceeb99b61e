"""`stratus meter`: billing export, ledger verification and signing-key rotation.

    stratus meter export --project P --from 2026-11-01T00:00:00Z --to 2026-12-01T00:00:00Z --format csv
    stratus meter verify [--project P]
    stratus meter rotate-key

Design decisions
================

- The ledger is read where the operator writes it: ``--ledger-dir`` (default
  ``$STRATUS_LEDGER_DIR``) or ``--s3-bucket`` (``$STRATUS_LEDGER_S3_BUCKET``, endpoint
  ``$STRATUS_LEDGER_S3_ENDPOINT``, credentials from the usual AWS_* environment).
- Trusted keys come from ``--jwks FILE`` (a JWK Set, e.g. saved from the catalog), or
  else from ConfigMap ``stratus-ledger-keys`` in ``--namespace`` of the current
  kubeconfig's cluster. Never from the records themselves: a record only names its key.
- ``verify`` checks every signature, the hash chain, sequence and time continuity of
  each project's chain and reports the first bad record with its position, id, seq and
  the problem (a CamelCase word) before exiting 1. ``--head project=seq:sha256`` pins
  a published head, which is what catches a deleted tail.
- ``export`` verifies the selected project's chain first and refuses a broken one
  (``--no-verify`` skips that). Records are selected by interval start in
  ``[--from, --to)``, so consecutive exports partition the ledger. ``--price-list``
  (JSON or YAML: ``{"currency": "EUR", "rates": {"vcpu-seconds": {"amount": 5, "per":
  3600}}}``) adds a ``cost`` section to the JSON export (CloudKitty-style flat rating of
  the period's totals, rounded once per meter).
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import sys
from datetime import datetime

import click


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    from ..core.metering import parse_time

    text = value.strip()
    if len(text) == 10:
        text += "T00:00:00Z"
    try:
        return parse_time(text)
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


def _store(ledger_dir: str | None, s3_bucket: str | None, s3_endpoint: str | None, s3_prefix: str):
    from ..drivers.ledger_store import DirectoryLedgerStore, S3LedgerStore

    if s3_bucket:
        import boto3

        return S3LedgerStore(boto3.client("s3", endpoint_url=s3_endpoint or None), s3_bucket, s3_prefix)
    if not ledger_dir:
        raise click.UsageError("say where the ledger is: --ledger-dir (or STRATUS_LEDGER_DIR) or --s3-bucket")
    if not pathlib.Path(ledger_dir).is_dir():
        raise click.UsageError(f"no ledger directory at {ledger_dir}")
    return DirectoryLedgerStore(ledger_dir, fsync=False)


def _keyring(jwks: str | None, namespace: str):
    from ..core.ledger import Keyring

    if jwks:
        return Keyring.from_jwks(json.loads(pathlib.Path(jwks).read_text()))
    from ..drivers.ledger_keys import published_keyring

    try:
        return published_keyring(namespace)
    except Exception as e:  # noqa: BLE001 - explain, do not trace
        raise click.ClickException(f"cannot read the published keys (ConfigMap stratus-ledger-keys in {namespace}): "
                                   f"{e}; pass --jwks FILE") from e


def _heads(values: tuple[str, ...]):
    from ..core.ledger import ChainHead

    heads = {}
    for v in values:
        try:
            project, rest = v.split("=", 1)
            seq, digest = rest.split(":", 1)
            heads[project] = ChainHead(project=project, seq=int(seq), hash=digest, end=None, record_id=None)
        except (ValueError, TypeError) as e:
            raise click.BadParameter(f"{v!r}: expected project=seq:sha256") from e
    return heads


_where = [
    click.option("--ledger-dir", envvar="STRATUS_LEDGER_DIR", help="The ledger directory the operator writes."),
    click.option("--s3-bucket", envvar="STRATUS_LEDGER_S3_BUCKET", help="Read the ledger from this bucket instead."),
    click.option("--s3-endpoint", envvar="STRATUS_LEDGER_S3_ENDPOINT", help="S3 endpoint URL."),
    click.option("--s3-prefix", default="ledger/", show_default=True),
]
_keys = [
    click.option("--jwks", type=click.Path(exists=True, dir_okay=False), help="Trusted public keys (a JWK Set file)."),
    click.option("--namespace", envvar="STRATUS_NAMESPACE", default="default", show_default=True,
                 help="The operator's namespace, holding ConfigMap stratus-ledger-keys."),
]


def _apply(options):
    def deco(fn):
        for opt in reversed(options):
            fn = opt(fn)
        return fn
    return deco


@click.group()
def meter() -> None:
    """Usage ledger: billing export, verification, key rotation."""


@meter.command()
@click.option("--project", required=True, help="The project to export.")
@click.option("--from", "since", help="First interval start included (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC).")
@click.option("--to", "until", help="Interval starts before this are included.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--detail", is_flag=True, help="One row per resource and meter instead of per meter.")
@click.option("--price-list", type=click.Path(exists=True, dir_okay=False), help="Rate the totals (JSON export).")
@click.option("--verify/--no-verify", "check", default=True, show_default=True,
              help="Verify the project's chain before exporting.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
@_apply(_where + _keys)
def export(project, since, until, fmt, detail, price_list, check, output, ledger_dir, s3_bucket, s3_endpoint,
           s3_prefix, jwks, namespace) -> None:
    """Usage of a project over a period, as CSV or JSON."""
    from ..core.ledger import export_csv, export_json, usage_totals

    store = _store(ledger_dir, s3_bucket, s3_endpoint, s3_prefix)
    lo, hi = _time(since), _time(until)
    raw = [data for _, data in store.read(project)]
    if check:
        from ..core.ledger import verify

        result = verify(raw, _keyring(jwks, namespace))
        if not result:
            raise click.ClickException(f"the ledger of {project} does not verify, not exporting: {result.error}")
    if fmt == "csv":
        text = export_csv(raw, project=project, since=lo, until=hi, detail=detail)
    else:
        doc = json.loads(export_json(raw, project=project, since=lo, until=hi, detail=detail))
        if price_list:
            import yaml

            from ..core.metering import PriceList

            prices = PriceList.from_dict(yaml.safe_load(pathlib.Path(price_list).read_text()))
            doc["cost"] = {}
            for p, totals in usage_totals(raw, project=project, since=lo, until=hi).items():
                c = prices.rate(totals)
                doc["cost"][p] = {"currency": c.currency, "lines": c.lines, "total": c.total,
                                  "unpriced": list(c.unpriced)}
        text = json.dumps(doc, separators=(",", ":")) + "\n"
    if output:
        pathlib.Path(output).write_text(text)
    else:
        click.echo(text, nl=False)


@meter.command("verify")
@click.option("--project", "projects", multiple=True, help="Only these projects (default: all).")
@click.option("--head", "heads", multiple=True, help="A published chain head project=seq:sha256 to reach.")
@_apply(_where + _keys)
def verify_cmd(projects, heads, ledger_dir, s3_bucket, s3_endpoint, s3_prefix, jwks, namespace) -> None:
    """Check every signature, the hash chains and time continuity; name the first bad record."""
    from ..core.ledger import Ledger, Signer

    store = _store(ledger_dir, s3_bucket, s3_endpoint, s3_prefix)
    ring = _keyring(jwks, namespace)
    ledger = Ledger(store, Signer.generate())  # a throwaway signer: this ledger only reads
    selected = list(projects) or ledger.projects()
    result = ledger.verify(ring, selected, expect_heads=_heads(heads))
    if not result:
        f = result.error
        click.echo(f"FAILED {f.project or '?'} {f}", err=False)
        sys.exit(1)
    click.echo(f"OK: {result.checked} records in {len(selected)} projects verified with {len(ring)} keys")
    for p, h in sorted(result.heads.items()):
        click.echo(f"  {p}: seq {h.seq} {h.record_id} sha256 {h.hash}")


@meter.command("rotate-key")
@click.option("--namespace", envvar="STRATUS_NAMESPACE", default="default", show_default=True)
def rotate_key(namespace) -> None:
    """Add a new signing key and make it current; old keys stay published for verification."""
    from ..drivers.ledger_keys import SIGNING_SECRET, keys_from_secret_data, publish_keys
    from ..core.ledger import Signer
    from ..drivers import kube

    secret = kube.get("v1", "secrets", SIGNING_SECRET, namespace)
    if secret is None:
        raise click.ClickException(f"no Secret {SIGNING_SECRET} in {namespace}: is the operator running?")
    new = Signer.generate()
    data = dict(secret.get("data") or {})
    data["current"] = base64.b64encode(new.key_id.encode()).decode()
    data[f"{new.key_id}.pem"] = base64.b64encode(new.private_pem()).decode()
    kube.patch("v1", "secrets", SIGNING_SECRET, {"metadata": {"resourceVersion": secret["metadata"]["resourceVersion"]},
                                                 "data": data}, namespace)
    signer, ring = keys_from_secret_data(data)
    publish_keys(namespace, ring, signer.key_id)
    click.echo(f"new signing key {new.key_id}; {len(ring)} keys published; the operator signs with it from the "
               f"next interval on")


if __name__ == "__main__":  # pragma: no cover
    meter(prog_name=os.path.basename(sys.argv[0]))


#: Registered by stratus.cli.
COMMANDS = (meter,)
