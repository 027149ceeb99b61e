"""The Helm chart: lint, install into the real API server, and prove its RBAC suffices by
running the operator with the chart's own ServiceAccount token."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import uuid

import yaml

from .kube import Operator, wait_for

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "stratus"


def helm(kube, *args: str) -> subprocess.CompletedProcess:
    from stratus.dev.cluster import tool

    return subprocess.run([tool("helm"), "--kubeconfig", kube.kubeconfig, *args], capture_output=True, text=True)


def test_chart_lints_and_renders(kube):
    res = helm(kube, "lint", str(CHART), "--strict")
    assert res.returncode == 0, res.stdout + res.stderr
    bad = helm(kube, "template", "x", str(CHART), "--set", "logFormat=xml")
    assert bad.returncode != 0 and "logFormat" in bad.stderr


def test_chart_renders_the_ledger_credentials_secret_as_env_from(kube):
    """With the ledger in S3 and a credentials Secret, every variable stays under `env` and
    the Secret arrives through `envFrom` (it once swallowed the variables after it)."""
    res = helm(kube, "template", "x", str(CHART), "--kube-version", "1.36.3", "--set", "ledger.s3.bucket=usage", "--set",
               "ledger.s3.endpoint=http://s3.example:9000", "--set", "ledger.s3.credentialsSecret=ledger-creds")
    assert res.returncode == 0, res.stderr
    deployment = next(d for d in yaml.safe_load_all(res.stdout) if d and d.get("kind") == "Deployment"
                      and d["spec"]["template"]["spec"]["containers"][0]["name"] == "operator")  # not the dashboard's
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    names = [e["name"] for e in container["env"]]
    assert {"STRATUS_LEDGER_S3_BUCKET", "STRATUS_IMAGE_SERVICE_PORT", "STRATUS_BOOTSERVER_HTTP_PORT",
            "STRATUS_BAREMETAL_NODES"} <= set(names)
    assert container["envFrom"] == [{"secretRef": {"name": "ledger-creds"}}]


def test_chart_crds_are_the_generated_ones():
    generated = {p.name: p.read_text() for p in (REPO / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert shipped == generated


def test_chart_installs_and_its_rbac_runs_the_operator(kube, crds, operator, namespace, tmp_path):
    release_ns = f"stratus-{uuid.uuid4().hex[:5]}"
    # The session installed the chart's roles and policies the way `make run` does
    # (kubectl apply); the release takes them over, as it would on an upgrade from that.
    res = helm(kube, "install", "stratus", str(CHART), "--namespace", release_ns, "--create-namespace",
               "--take-ownership", "--wait", "--timeout", "90s")
    assert res.returncode == 0, res.stdout + res.stderr
    try:
        dep = kube.apps.read_namespaced_deployment("stratus", release_ns)
        assert dep.status.available_replicas == 1
        sa = dep.spec.template.spec.service_account_name
        # The dashboard runs beside it with a ServiceAccount that may only list Projects:
        # everything else it does, it does with the signed-in user's token.
        dash = kube.apps.read_namespaced_deployment("stratus-dashboard", release_ns)
        dash_sa = f"system:serviceaccount:{release_ns}:{dash.spec.template.spec.service_account_name}"
        assert kube.kubectl("auth", "can-i", "list", "projects.stratus.dev", "--as", dash_sa).stdout.strip() == "yes"
        for verb, what in (("list", "servers.stratus.dev"), ("get", "secrets"), ("create", "servers.stratus.dev")):
            assert kube.kubectl("auth", "can-i", verb, what, "-A", "--as", dash_sa).stdout.strip() == "no", (verb, what)
        assert kube.core.read_namespaced_service("stratus-dashboard", release_ns).metadata.labels["stratus.dev/service"] == "dashboard"
        # Run the operator for real with the chart's ServiceAccount: a token from the
        # TokenRequest API and nothing else. The session operator steps aside meanwhile.
        token = kube.core.create_namespaced_service_account_token(
            sa, release_ns, {"spec": {"expirationSeconds": 3600}}).status.token
        admin = yaml.safe_load(pathlib.Path(kube.kubeconfig).read_text())
        cluster = admin["clusters"][0]["cluster"]
        kc = tmp_path / "chart-sa.kubeconfig"
        kc.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
            "current-context": "c",
        }))
        operator.stop()
        chart_op = Operator(str(kc), tmp_path / "chart-operator.log")
        chart_op.start()
        try:
            flavor = f"f-{uuid.uuid4().hex[:6]}"
            kube.create("flavors", {"kind": "Flavor", "metadata": {"name": flavor}, "spec": {"vcpus": 1, "ram": "1Gi"}})
            kube.create("servers", {"kind": "Server", "metadata": {"name": "rbac"},
                                    "spec": {"flavor": flavor, "containerDisk": "quay.io/containerdisks/fedora:41"}}, namespace)
            wait_for(lambda: (s := kube.get("servers", "rbac", namespace)) and kube.condition(s).get("status") == "True",
                     90, what="Server Ready under the chart's RBAC")
            kube.delete("servers", "rbac", namespace)
            wait_for(lambda: kube.get("servers", "rbac", namespace) is None, 60, what="Server deleted under the chart's RBAC")
            # No RBAC denial for the chart's ServiceAccount (other 403s, such as events
            # refused by a terminating namespace of an earlier test, are not RBAC's).
            log = chart_op.tail(2000)
            denied = [line for line in log.splitlines() if f"system:serviceaccount:{release_ns}:" in line]
            assert not denied, "\n".join(denied[:5])
        finally:
            chart_op.stop()
            operator.start()
    finally:
        res = helm(kube, "uninstall", "stratus", "--namespace", release_ns, "--wait")
        assert res.returncode == 0, res.stderr
        kube.core.delete_namespace(release_ns)
        # Give the rest of the session back the roles and policies the release removed.
        restore = kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "templates" / "roles.yaml"))
        assert restore.returncode == 0, restore.stderr
    # Uninstalling keeps the CRDs (and so every user's objects).
    assert kube.kubectl("get", "crd", "servers.stratus.dev").returncode == 0
