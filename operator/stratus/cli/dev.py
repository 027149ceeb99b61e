"""`stratus dev`: the local control plane and `make run` (see stratus.dev)."""

from __future__ import annotations

import sys

import click


@click.group()
def dev() -> None:
    """The local control plane (kwokctl, binary runtime) for development and tests."""


_name = click.option("--name", default="stratus", show_default=True, help="Cluster name.")


@dev.command("up")
@_name
@click.option("--nodes", default=3, show_default=True, help="Simulated hypervisor nodes.")
def dev_up(name: str, nodes: int) -> None:
    """Build what is missing and start the control plane; print the kubeconfig."""
    from ..dev import cluster as devcluster

    click.echo(devcluster.up(name, nodes=nodes))


@dev.command("down")
@_name
def dev_down(name: str) -> None:
    """Stop the operator started by `dev run` and delete the cluster."""
    from ..dev import cluster as devcluster, run as devrun

    devrun.stop_dashboard(name)
    devrun.stop_operator(name)
    devrun.stop_podrunner(name)
    devrun.stop_object_store(name)
    devcluster.down(name)


@dev.command("status")
@_name
def dev_status(name: str) -> None:
    """Say whether the cluster and the operator run."""
    from ..dev import cluster as devcluster, run as devrun

    running = devcluster.status(name)
    devrun.operator_status(name)
    sys.exit(0 if running else 1)


@dev.command("run")
@_name
@click.option("--nodes", default=3, show_default=True)
@click.option("--timeout", default=180, show_default=True, help="Seconds to wait for the examples to become Ready.")
def dev_run(name: str, nodes: int, timeout: int) -> None:
    """Control plane + CRDs + operator (in the background) + examples/; print what came up."""
    from ..dev import run as devrun

    sys.exit(devrun.run(name, nodes=nodes, timeout=timeout))


@dev.command("podrunner")
@click.option("--root", type=click.Path(path_type=__import__("pathlib").Path), default=None,
              help="Where engine data, logs and state live (default: the cache's engines/ folder).")
@click.option("--keep", is_flag=True, help="Leave the engine processes running when the runner stops.")
def dev_podrunner(root, keep: bool) -> None:
    """Run engine Pods (label stratus.dev/engine) as real local processes (see stratus.dev.podrunner)."""
    from ..dev import cluster as devcluster, podrunner

    podrunner.main(root or devcluster.CACHE / "engines", keep=keep)


#: Registered by stratus.cli.
COMMANDS = (dev,)
