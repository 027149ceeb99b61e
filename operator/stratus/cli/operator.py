"""`stratus operator` (run the operator) and `stratus crds` (generate the CRDs from the models)."""

from __future__ import annotations

import logging
import os
import pathlib

import click

#: The checkout (crds/ is written there by default).
REPO = pathlib.Path(__file__).resolve().parents[3]


@click.command()
@click.option("--health-port", default=8080, show_default=True, help="Port of the /healthz liveness endpoint (0 disables it).")
@click.option("--log-format", type=click.Choice(["json", "plain"]), default="json", show_default=True)
@click.option("--verbose", is_flag=True, help="Debug logging.")
@click.option("--priority", default=0, show_default=True, help="Peering priority; the highest-priority replica is the active one.")
@click.option("--standalone", is_flag=True, help="Do not peer with other replicas (development only).")
@click.option("--metrics-port", envvar="STRATUS_METRICS_PORT", default=9090, show_default=True, help="Port of /metrics (0 disables it).")
@click.option("--ledger-dir", envvar="STRATUS_LEDGER_DIR", help="Usage ledger directory (in a pod /var/lib/stratus/ledger by default; elsewhere off unless given).")
def operator(health_port: int, log_format: str, verbose: bool, priority: int, standalone: bool, metrics_port: int = 9090, ledger_dir: str | None = None) -> None:
    """Run the operator: reconcile every Stratus kind cluster-wide."""
    os.environ["STRATUS_METRICS_PORT"] = str(metrics_port)  # read by controllers.metering at startup
    if ledger_dir:
        os.environ["STRATUS_LEDGER_DIR"] = ledger_dir
    import kopf

    from ..controllers import load
    from ..controllers.settings import PEERING_NAME

    kopf.configure(
        debug=verbose,
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger("kubernetes.client.rest").setLevel(logging.WARNING)
    load()
    if not standalone:
        from ..controllers.settings import ensure_peering

        ensure_peering()
    kopf.run(
        clusterwide=True,
        standalone=standalone,
        peering_name=PEERING_NAME,
        priority=priority,
        liveness_endpoint=f"http://0.0.0.0:{health_port}/healthz" if health_port else None,
    )


@click.command()
@click.option("--out", "out_dir", type=click.Path(path_type=pathlib.Path), default=REPO / "crds", show_default=True)
@click.option("--check", is_flag=True, help="Do not write; exit 1 when the files differ from the models.")
def crds(out_dir: pathlib.Path, check: bool) -> None:
    """Generate one CRD per kind from the pydantic models."""
    from ..api import crds as gen

    if check:
        expected = gen.expected_files()
        actual = {p.name: p.read_text() for p in out_dir.glob("*.yaml")}
        drift = sorted(set(expected) ^ set(actual) | {n for n in expected if actual.get(n) != expected[n]})
        if drift:
            raise click.ClickException(f"crds/ differs from the models in: {', '.join(drift)}; run `make crds` and commit")
        click.echo(f"crds/ matches the models ({len(expected)} files)")
        return
    for path in gen.write(out_dir):
        click.echo(f"wrote {path.relative_to(out_dir.parent) if out_dir.parent in path.parents else path}")


#: Registered by stratus.cli.
COMMANDS = (operator, crds)
