"""Integration tier: the real local control plane with the operator running for real.

- `cluster` (session): the cluster KUBECONFIG names, when set (a real cluster with
  KubeVirt and CDI, or a running dev cluster); otherwise a fresh local control plane
  named `stratus-test` (or $STRATUS_TEST_CLUSTER), deleted at the end unless STRATUS_KEEP_CLUSTER=1.
- `operator` (session): CRDs installed and `stratus operator` running as a subprocess;
  tests may kill and restart it. Its log is printed when a test fails.
- `namespace` (function): a namespace of the test's own, deleted afterwards.

Tests that need only a BMC simulator or an S3 server use their own fixtures and do
not start the cluster.
"""

from __future__ import annotations

import os
import pathlib
import re
import uuid

import pytest

from .kube import Kube, Operator, wait_for
from .s3 import *  # noqa: F401,F403  (fixtures: a real versitygw S3 server)
from .bmc import *  # noqa: F401,F403  (fixtures: real ipmi_sim BMC simulators)
from .identity import *  # noqa: F401,F403  (fixtures: project roles, acting as a user)

#: Several checkouts (or developers) on one machine can each test on their own cluster.
CLUSTER_NAME = os.environ.get("STRATUS_TEST_CLUSTER", "stratus-test")


@pytest.fixture(scope="session")
def cluster() -> str:
    """Path of the kubeconfig of the cluster under test."""
    from stratus.dev import cluster as devcluster

    if os.environ.get("KUBECONFIG"):
        yield os.environ["KUBECONFIG"]
        return
    kubeconfig = devcluster.up(CLUSTER_NAME, nodes=4, build=False)
    yield str(kubeconfig)
    if not os.environ.get("STRATUS_KEEP_CLUSTER"):
        devcluster.down(CLUSTER_NAME)


@pytest.fixture(scope="session")
def kube(cluster) -> Kube:
    return Kube(cluster)


@pytest.fixture(scope="session")
def crds(kube) -> None:
    repo = pathlib.Path(__file__).resolve().parents[2]
    res = kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(repo / "crds"))
    assert res.returncode == 0, res.stderr
    res = kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(repo / "crds"))
    assert res.returncode == 0, res.stderr


@pytest.fixture(scope="session")
def operator(kube, crds, stratus_roles, tmp_path_factory) -> Operator:
    """The operator, in a cluster set up as the chart sets it up (CRDs, roles, policies)."""
    op = Operator(kube.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    yield op
    op.stop()


@pytest.fixture(scope="session")
def podrunner(kube, tmp_path_factory):
    """The local pod runner (stratus.dev.podrunner): engine Pods' containers as real local
    processes. Session-scoped; stopped (with every engine process) at the end."""
    import signal
    import subprocess

    from stratus.dev.run import podrunner_command

    root = tmp_path_factory.mktemp("engines")
    log = open(root / "podrunner.log", "ab")
    proc = subprocess.Popen(podrunner_command(root), env={**os.environ, "KUBECONFIG": kube.kubeconfig},
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    yield root
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)


@pytest.fixture
def namespace(kube, request) -> str:
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:5]}"
    kube.core.create_namespace({"metadata": {"name": name, "labels": {"stratus.dev/test": "true"}}})
    yield name
    kube.core.delete_namespace(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "operator" in item.fixturenames:
        op = item.funcargs.get("operator")
        if op is not None:
            report.sections.append(("operator log (last lines)", op.tail(80)))


__all__ = ["wait_for"]
