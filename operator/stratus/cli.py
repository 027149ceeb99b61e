"""The `stratus` command.

    stratus operator            run the operator (kopf) against the current kubeconfig
    stratus crds [--check]      write crds/ from the models (or fail on drift)
    stratus dev up|down|status  the local control plane (see stratus.devcluster)
    stratus dev run             the whole local cloud: control plane, CRDs, operator, examples
"""

from __future__ import annotations

import logging
import os
import pathlib
import sys

import click

from . import __version__

REPO = pathlib.Path(__file__).resolve().parents[2]


@click.group()
@click.version_option(__version__, prog_name="stratus")
def main() -> None:
    """Stratus: an OpenStack-style cloud on Kubernetes, as custom resources."""


@main.command()
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

    from .controllers import load
    from .controllers.settings import PEERING_NAME

    kopf.configure(
        debug=verbose,
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger("kubernetes.client.rest").setLevel(logging.WARNING)
    load()
    if not standalone:
        from .controllers.settings import ensure_peering

        ensure_peering()
    kopf.run(
        clusterwide=True,
        standalone=standalone,
        peering_name=PEERING_NAME,
        priority=priority,
        liveness_endpoint=f"http://0.0.0.0:{health_port}/healthz" if health_port else None,
    )


@main.command()
@click.option("--out", "out_dir", type=click.Path(path_type=pathlib.Path), default=REPO / "crds", show_default=True)
@click.option("--check", is_flag=True, help="Do not write; exit 1 when the files differ from the models.")
def crds(out_dir: pathlib.Path, check: bool) -> None:
    """Generate one CRD per kind from the pydantic models."""
    from .api import crds as gen

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


@main.group()
def dev() -> None:
    """The local control plane (kwokctl, binary runtime) for development and tests."""


_name = click.option("--name", default="stratus", show_default=True, help="Cluster name.")


@dev.command("up")
@_name
@click.option("--nodes", default=3, show_default=True, help="Simulated hypervisor nodes.")
def dev_up(name: str, nodes: int) -> None:
    """Build what is missing and start the control plane; print the kubeconfig."""
    from . import devcluster

    click.echo(devcluster.up(name, nodes=nodes))


@dev.command("down")
@_name
def dev_down(name: str) -> None:
    """Stop the operator started by `dev run` and delete the cluster."""
    from . import devcluster, devrun

    devrun.stop_operator(name)
    devrun.stop_object_store(name)
    devcluster.down(name)


@dev.command("status")
@_name
def dev_status(name: str) -> None:
    """Say whether the cluster and the operator run."""
    from . import devcluster, devrun

    running = devcluster.status(name)
    devrun.operator_status(name)
    sys.exit(0 if running else 1)


@dev.command("run")
@_name
@click.option("--nodes", default=3, show_default=True)
@click.option("--timeout", default=180, show_default=True, help="Seconds to wait for the examples to become Ready.")
def dev_run(name: str, nodes: int, timeout: int) -> None:
    """Control plane + CRDs + operator (in the background) + examples/; print what came up."""
    from . import devrun

    sys.exit(devrun.run(name, nodes=nodes, timeout=timeout))


from .cli_meter import meter  # noqa: E402  (the `stratus meter` group)

main.add_command(meter)
__import__("stratus.cli_identity", fromlist=["register"]).register(main)  # `stratus token`, `stratus catalog`

from .cli_image import image_group  # noqa: E402

main.add_command(image_group)
main.add_command(__import__("stratus.cli_consolidate", fromlist=["consolidate"]).consolidate)  # `stratus consolidate`


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
