"""`stratus spark master|worker|driver`: the entrypoints of a DataCluster's and a DataJob's Pods.

On a real cluster they run in the Spark image (Spark plus the stratus package); on the local
control plane the pod runner (stratus.dev.podrunner) runs the same command as a process. They
read the Pod's environment: ``STRATUS_PORT_<NAME>`` and ``STRATUS_LISTEN_HOST`` where the pod
runner gives loopback ports, else the container ports and ``POD_IP``; then exec Spark's own
``spark-class`` / ``spark-submit`` (from $SPARK_HOME, else the pyspark package).

``driver`` submits the application in client mode to the master and stays its driver. The
Buckets' credentials arrive as env (from their Secrets) and are written only to a 0600
properties file of its own, never to argv or output. When Spark exits, it writes the tail of
the output (with the exception line) as the container's termination message.
"""

from __future__ import annotations

import click

COMMANDS: list = []


@click.group()
def spark() -> None:
    """Spark engine entrypoints of DataCluster and DataJob Pods (run inside the Pod)."""


COMMANDS.append(spark)


@spark.command("master")
def master() -> None:
    """Run the Spark standalone master in the foreground."""
    from ..instance import spark as sparkengine

    sparkengine.exec_daemon("master")


@spark.command("worker")
def worker() -> None:
    """Run a Spark standalone worker registered with $STRATUS_SPARK_MASTER."""
    from ..instance import spark as sparkengine

    sparkengine.exec_daemon("worker")


@spark.command("driver", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def driver(args: tuple[str, ...]) -> None:
    """Submit the application described by the STRATUS_SPARK_* environment and drive it."""
    import sys

    from ..instance import spark as sparkengine

    sys.exit(sparkengine.run_driver(list(args)))
