"""Public HOT templates nobody here wrote (tests/integration/templates/heat-templates,
sources in MANIFEST.yaml), run unchanged through the engine against simulated children:
those the manifest says run reach COMPLETE with their outputs; the others are refused
with the reason the manifest gives."""

from __future__ import annotations

import json
import pathlib

import pytest
import yaml

from stratus.core.heat import Stack, step

ROOT = pathlib.Path(__file__).resolve().parents[1] / "integration" / "templates" / "heat-templates"
MANIFEST = yaml.safe_load((ROOT / "MANIFEST.yaml").read_text())
PHASES = {"Server": "ACTIVE", "Volume": "available", "KeyPair": "Available", "ServerGroup": "Available", "Bucket": "Bound"}


def load(local: str, **kw) -> Stack:
    files = {p.name: p.read_text() for p in (ROOT / local).parent.glob("*.yaml")}
    return Stack((ROOT / local).read_text(), name="pub", namespace="ns", files=files, **kw)


def simulate(stack: Stack, passes: int = 30):
    """Play the cluster: every applied object becomes Ready, secrets get generated,
    attachments are reported; returns the last step."""
    observed, secrets, attached = {}, {}, {}
    for _ in range(passes):
        st = step(stack, observed, secrets, attached)
        if st.outputs is not None:
            return st
        assert not st.failed, st.failed
        for path, kind, digest in st.secrets:
            secrets[path] = {"hash": digest, "value": f"random-{path}"} if kind == "random" else \
                {"hash": digest, "public_key": "ssh-ed25519 AAAA", "private_key": "PRIVATE"}
        for body in st.apply:
            body = json.loads(json.dumps(body))
            path = body["metadata"]["annotations"]["stratus.dev/stack-resource-path"]
            body["metadata"]["generation"] = 1
            body["status"] = {"phase": PHASES.get(body["kind"], "Available"), "observedGeneration": 1,
                              "conditions": [{"type": "Ready", "status": "True"}]}
            if body["kind"] == "Server":
                body["status"]["addresses"] = [{"network": "pod", "address": "10.1.2.3"}]
            observed.setdefault(path, {})[f"{body['kind']}/{body['metadata']['name']}"] = body
        for volume, server, _ in st.attach:
            attached[volume] = server
    raise AssertionError("did not complete")


RUNS = [f for f in MANIFEST["files"] if f["verdict"] == "runs"]
REFUSED = [f for f in MANIFEST["files"] if f["verdict"] == "refused"]
PARAMS = {"resource_group/server_with_volumes.yaml": {"key_name": "mine", "image_id": "cirros", "instance_type": "m1.small"}}


@pytest.mark.parametrize("entry", RUNS, ids=[f["local"] for f in RUNS])
def test_public_template_runs_unchanged(entry):
    stack = load(entry["local"], parameters=PARAMS.get(entry["local"], {}))
    assert stack.ok, stack.errors
    st = simulate(stack)
    assert st.complete and not st.output_errors, st.output_errors
    expected = {
        "resource_group/server_with_volumes.yaml": {"server_ip": "10.1.2.3"},
        "resource_group/resource_group.yaml": {
            "resource1_id": "random-random_group.0", "resource2_id": "random-random_group.1",
            "resource1_value": "random-random_group.0", "resource2_value": "random-random_group.1",
            "all_values": ["random-random_group.0", "random-random_group.1"]},
        "resource_group/resource_group_index_lookup.yaml": {
            "all_values": ["random-random_group.0.random", "random-random_group.1.random", "random-random_group.2.random"]},
        "condition.yaml": {"test_res_value": "env_is_test", "prod_resource": "no_prod_res",
                           "test_res1_value": "just in test env", "beijing_prod_res": "no_prod_res"},
    }[entry["local"]]
    assert st.outputs == expected


def test_server_with_volumes_attaches_each_group_volume():
    stack = load("resource_group/server_with_volumes.yaml", parameters=PARAMS["resource_group/server_with_volumes.yaml"])
    st = simulate(stack)
    assert sorted((v, s) for v, s, _ in st.attach) == [
        ("pub-group-of-volumes-0-volume", "pub-instance"), ("pub-group-of-volumes-1-volume", "pub-instance")]


def test_index_lookup_lengths_follow_the_index():
    stack = load("resource_group/resource_group_index_lookup.yaml")
    lengths = [stack.nodes[f"random_group.{i}.random"].scope.params["lengths"][int(stack.nodes[f"random_group.{i}.random"].scope.params["index"])]
               for i in range(3)]
    assert lengths == ["4", "5", "6"]


def test_condition_template_in_prod():
    stack = load("condition.yaml", parameters={"env_type": "prod"})
    st = simulate(stack)
    assert st.outputs["res_value"] == "prod_res" and st.outputs["test_res_value"] == "env_is_prod"
    assert st.outputs["beijing_prod_res"].startswith("pub-beijing") and "fujian_res" not in stack.nodes


@pytest.mark.parametrize("entry", REFUSED, ids=[f["local"] for f in REFUSED])
def test_public_template_refused_with_reason(entry):
    params = {"key_name": "mine", "flavor": "m1.small", "KeyName": "mine", "InstanceType": "m1.small", "ImageId": "cirros"}
    schema = yaml.safe_load((ROOT / entry["local"]).read_text()).get("parameters") or {}
    stack = load(entry["local"], parameters={k: v for k, v in params.items() if k in schema})
    assert not stack.ok
    message = "; ".join(map(str, stack.errors))
    assert {"F18/NovaInstanceWithCinderVolume_Native.yaml": "image 'F18-x86_64-cfntools' is not a Kubernetes object name",
            "software-config/example-cloud-init.yaml": "resource 'the_sg' has type OS::Neutron::SecurityGroup",
            "hello_world.yaml": "resource 'my_instance' has type AWS::EC2::Instance"}[entry["local"]] in message
