"""The `stratus` command, one module per command group.

    stratus operator            run the operator (kopf) against the current kubeconfig
    stratus crds [--check]      write crds/ from the models (or fail on drift)
    stratus dev up|down|status  the local control plane (stratus.dev.cluster)
    stratus dev run             the whole local cloud: control plane, CRDs, operator, examples
    stratus token|catalog       identity (stratus.cli.identity)
    stratus image               images (stratus.cli.image)
    stratus meter               the usage ledger (stratus.cli.meter)
    stratus consolidate         node consolidation (stratus.cli.consolidate)
    stratus spark               Spark engine entrypoints of data-processing Pods (stratus.cli.spark)
    stratus stack               orchestration stacks (stratus.cli.stack)
    stratus instance            a Database Pod's instance manager (stratus.instance)
    stratus dashboard           the web console (stratus.cli.dashboard)

Each module in MODULES exposes ``COMMANDS``, the click commands or groups it adds to the
top level; that is the one way a command is registered. A module's heavy imports stay
inside its functions, so `stratus --help` stays fast.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from .. import __version__

#: Every command module, in the order `stratus --help` lists their commands.
MODULES = ("operator", "dev", "identity", "image", "meter", "consolidate", "spark", "stack", "instance", "dashboard")


@click.group()
@click.version_option(__version__, prog_name="stratus")
def main() -> None:
    """Stratus: an OpenStack-style cloud on Kubernetes, as custom resources."""


for _module in MODULES:
    for _command in importlib.import_module(f"{__name__}.{_module}").COMMANDS:
        main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
