"""Orchestration on the real API server with the operator running: a HOT template with
a generated KeyPair, a Volume, a Server booting from an imported Image with the volume
attached, a RandomString and outputs reaches CREATE_COMPLETE; a parameter update resizes
the server in place; deletion leaves nothing; an invalid template is refused with the
path before anything is created."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid

import pytest
import yaml
from kubernetes.client.rest import ApiException

from .kube import wait_for
from .test_images import image_body, image_store, qcow2, web, web_root  # noqa: F401  (fixtures)
from .test_volumes import vtype

TEMPLATE = yaml.safe_dump({
    "heat_template_version": "2018-08-31",
    "parameters": {
        "flavor": {"type": "string", "constraints": [{"custom_constraint": "nova.flavor"}]},
        "image": {"type": "string", "constraints": [{"custom_constraint": "glance.image"}]},
        "volume_type": {"type": "string"},
        "size": {"type": "number", "default": 1, "constraints": [{"range": {"min": 1, "max": 4}}]},
    },
    "resources": {
        "key": {"type": "OS::Nova::KeyPair", "properties": {"name": "stack-key", "save_private_key": True}},
        "password": {"type": "OS::Heat::RandomString", "properties": {"length": 20}},
        "data": {"type": "OS::Cinder::Volume", "properties": {"size": {"get_param": "size"},
                                                             "volume_type": {"get_param": "volume_type"}}},
        "config": {"type": "OS::Heat::CloudConfig", "properties": {"cloud_config": {
            "chpasswd": {"list": {"str_replace": {"template": "root:$PW", "params": {"$PW": {"get_attr": ["password", "value"]}}}}}}}},
        "web": {"type": "OS::Nova::Server", "properties": {
            "name": {"list_join": ["-", [{"get_param": "OS::stack_name"}, "web"]]},
            "flavor": {"get_param": "flavor"}, "image": {"get_param": "image"}, "key_name": {"get_resource": "key"},
            "user_data_format": "RAW", "user_data": {"get_resource": "config"}}},
        "attach": {"type": "OS::Cinder::VolumeAttachment", "properties": {"instance_uuid": {"get_resource": "web"},
                                                                         "volume_id": {"get_resource": "data"}}},
    },
    "outputs": {
        "address": {"value": {"get_attr": ["web", "first_address"]}},
        "server_name": {"value": {"get_attr": ["web", "name"]}},
        "volume_size": {"value": {"get_attr": ["data", "size"]}},
        "private_key": {"value": {"get_attr": ["key", "private_key"]}},
        "password": {"value": {"get_attr": ["password", "value"]}},
    },
})


def flavor(kube, vcpus=1) -> str:
    name = f"f-{uuid.uuid4().hex[:8]}"
    kube.create("flavors", {"kind": "Flavor", "metadata": {"name": name}, "spec": {"vcpus": vcpus, "ram": "1Gi"}})
    return name


def stack_phase(kube, name, namespace, *phases):
    obj = kube.get("stacks", name, namespace)
    st = (obj or {}).get("status") or {}
    return obj if st.get("phase") in phases and st.get("observedGeneration") == obj["metadata"]["generation"] else None


def children(kube, namespace, stack):
    selector = f"stratus.dev/stack={stack}"
    out = []
    for plural in ("servers", "volumes", "keypairs"):
        out += [f"{plural}/{o['metadata']['name']}" for o in
                kube.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", namespace, plural, label_selector=selector)["items"]]
    out += [f"secrets/{s.metadata.name}" for s in
            kube.core.list_namespaced_secret(namespace, label_selector=f"stratus.dev/stack-secret={stack}").items]
    return out


def test_api_server_refuses_a_stack_without_a_template(kube, crds, namespace):
    with pytest.raises(ApiException) as info:
        kube.create("stacks", {"kind": "Stack", "metadata": {"name": "empty"}, "spec": {}}, namespace)
    assert info.value.status == 422 and "spec.template" in info.value.body


def test_invalid_template_is_refused_with_the_path(kube, operator, namespace):
    bad = yaml.safe_dump({"heat_template_version": "2018-08-31", "parameters": {"flavor": {"type": "string", "default": "x"}},
                          "resources": {"vol": {"type": "OS::Cinder::Volume", "properties": {"size": 1}},
                                        "web": {"type": "OS::Nova::Server", "properties": {
                                            "flavor": {"get_param": "flavour"}, "image": "cirros"}},
                                        "net": {"type": "OS::Neutron::Net"}}})
    kube.create("stacks", {"kind": "Stack", "metadata": {"name": "bad"}, "spec": {"template": bad}}, namespace)
    obj = wait_for(lambda: stack_phase(kube, "bad", namespace, "CREATE_FAILED"), 60, what="CREATE_FAILED")
    reason = obj["status"]["stackStatusReason"]
    assert "resources.web.properties.flavor: get_param refers to unknown parameter 'flavour'" in reason
    assert "resources.net.type: resource 'net' has type OS::Neutron::Net" in reason
    assert kube.condition(obj)["reason"] == "ValidationFailed"
    assert children(kube, namespace, "bad") == []  # nothing half-created


def test_stack_create_update_delete(kube, operator, namespace, image_store, web, qcow2):  # noqa: F811
    fname, data = qcow2
    kube.create("images", image_body("cirros", f"{web}/{fname}", hashlib.sha256(data).hexdigest(), minDisk=1), namespace)
    wait_for(lambda: (kube.get("images", "cirros", namespace) or {}).get("status", {}).get("phase") == "active", 120,
             what="image active")
    small, large = flavor(kube, 1), flavor(kube, 2)
    vt = vtype(kube)
    params = {"flavor": small, "image": "cirros", "volume_type": vt}
    kube.create("stacks", {"kind": "Stack", "metadata": {"name": "app"},
                           "spec": {"template": TEMPLATE, "parameters": params}}, namespace)
    obj = wait_for(lambda: stack_phase(kube, "app", namespace, "CREATE_COMPLETE", "CREATE_FAILED", "ROLLBACK_COMPLETE"), 300,
                   what="CREATE_COMPLETE")
    st = obj["status"]
    assert st["phase"] == "CREATE_COMPLETE", st.get("stackStatusReason")
    assert {r["name"]: r["state"] for r in st["resources"]} == {n: "CREATE_COMPLETE" for n in
                                                                ("key", "password", "data", "config", "web", "attach")}
    server = kube.get("servers", "app-web", namespace)
    assert server["status"]["phase"] == "ACTIVE" and server["spec"]["keyPair"] == "app-key"
    assert server["spec"]["image"] == "cirros" and server["spec"]["userData"].startswith("#cloud-config")
    assert server["metadata"]["ownerReferences"][0]["name"] == "app"
    assert server["metadata"]["labels"]["stratus.dev/stack-resource"] == "web"
    volume = kube.get("volumes", "app-data", namespace)
    assert volume["status"]["phase"] == "in-use" and volume["status"]["attachment"]["server"] == "app-web"
    key = kube.get("keypairs", "app-key", namespace)
    assert key["status"]["phase"] == "Available"
    outputs = {o["name"]: o for o in st["outputs"]}
    assert outputs["address"]["value"] == server["status"]["addresses"][0]["address"]
    assert outputs["server_name"]["value"] == "app-web" and outputs["volume_size"]["value"] == "1"
    # Secret outputs are not in status; they are in the outputs Secret.
    assert outputs["private_key"]["secret"] and outputs["password"]["secret"] and not outputs["password"]["value"]
    secret = kube.core.read_namespaced_secret(st["outputsSecret"], namespace).data
    password = base64.b64decode(secret["password"]).decode()
    assert len(password) == 20 and "OPENSSH PRIVATE KEY" in base64.b64decode(secret["private_key"]).decode()
    assert password not in str(obj["status"])
    assert password in server["spec"]["userData"]

    # Update one parameter: the server is resized in place, nothing else changes.
    kube.patch("stacks", "app", {"spec": {"parameters": {**params, "flavor": large}}}, namespace)
    obj = wait_for(lambda: stack_phase(kube, "app", namespace, "UPDATE_COMPLETE", "UPDATE_FAILED", "ROLLBACK_COMPLETE"), 300,
                   what="UPDATE_COMPLETE")
    assert obj["status"]["phase"] == "UPDATE_COMPLETE", obj["status"].get("stackStatusReason")
    server2 = kube.get("servers", "app-web", namespace)
    assert server2["spec"]["flavor"] == large and server2["metadata"]["uid"] == server["metadata"]["uid"]
    assert base64.b64decode(kube.core.read_namespaced_secret(st["outputsSecret"], namespace).data["password"]).decode() == password
    events = {e.reason for e in kube.events_for(namespace, "app", "Stack")}
    assert {"Complete", "ResourceCreateComplete"} <= events

    # Delete: everything goes, in reverse dependency order.
    kube.delete("stacks", "app", namespace)
    wait_for(lambda: kube.get("stacks", "app", namespace) is None, 300, what="stack deleted")
    assert children(kube, namespace, "app") == []
    assert kube.get("volumes", "app-data", namespace) is None and kube.get("servers", "app-web", namespace) is None


def outputs_of(obj) -> dict:
    return {o["name"]: o for o in obj["status"]["outputs"]}


ROLLBACK = yaml.safe_dump({
    "heat_template_version": "2018-08-31",
    "parameters": {"fail": {"type": "boolean", "default": False}, "size": {"type": "number", "default": 1},
                   "vtype": {"type": "string"}, "label": {"type": "string", "default": "first"}},
    "resources": {
        "keep": {"type": "OS::Cinder::Volume", "deletion_policy": "Retain",
                 "properties": {"size": 1, "volume_type": {"get_param": "vtype"}}},
        "data": {"type": "OS::Cinder::Volume", "properties": {"size": {"get_param": "size"},
                                                             "volume_type": {"get_param": "vtype"}}},
        "check": {"type": "OS::Heat::TestResource", "depends_on": "data",
                  "properties": {"value": "ok", "fail": {"get_param": "fail"}}},
        "label": {"type": "OS::Heat::Value", "properties": {"value": {"get_param": "label"}}},
    },
    "outputs": {"check": {"value": {"get_attr": ["check", "output"]}}, "label": {"value": {"get_attr": ["label", "value"]}}},
})


def test_failures_roll_back_and_retain_survives_delete(kube, operator, namespace):
    vt = vtype(kube)
    env = yaml.safe_dump({"parameter_defaults": {"vtype": vt}})
    template = ROLLBACK
    # A create that fails rolls back: what it made is deleted.
    kube.create("stacks", {"kind": "Stack", "metadata": {"name": "rb"},
                           "spec": {"template": template, "environment": env, "parameters": {"fail": "true"}}}, namespace)
    obj = wait_for(lambda: stack_phase(kube, "rb", namespace, "ROLLBACK_COMPLETE", "CREATE_COMPLETE"), 120, what="ROLLBACK_COMPLETE")
    assert obj["status"]["phase"] == "ROLLBACK_COMPLETE"
    assert "ROLLBACK_IN_PROGRESS" in " ".join(e.message for e in kube.events_for(namespace, "rb", "Stack"))
    wait_for(lambda: kube.get("volumes", "rb-data", namespace) is None, 60, what="rolled-back volume deleted")
    # Retry with a good parameter: CREATE_COMPLETE.
    kube.patch("stacks", "rb", {"spec": {"parameters": {"fail": "false"}}}, namespace)
    obj = wait_for(lambda: stack_phase(kube, "rb", namespace, "CREATE_COMPLETE", "CREATE_FAILED", "ROLLBACK_COMPLETE"), 120,
                   what="CREATE_COMPLETE")
    assert obj["status"]["phase"] == "CREATE_COMPLETE", obj["status"].get("stackStatusReason")
    assert outputs_of(obj)["check"]["value"] == "ok"
    # An update that fails rolls back to the last complete template and its parameters.
    kube.patch("stacks", "rb", {"spec": {"parameters": {"fail": "true", "label": "second"}}}, namespace)
    obj = wait_for(lambda: stack_phase(kube, "rb", namespace, "ROLLBACK_COMPLETE", "UPDATE_COMPLETE"), 120,
                   what="update ROLLBACK_COMPLETE")
    assert obj["status"]["phase"] == "ROLLBACK_COMPLETE"
    assert outputs_of(obj)["label"]["value"] == "first"
    # A change the API server refuses (a volume cannot shrink) fails the update too.
    kube.patch("stacks", "rb", {"spec": {"parameters": {"fail": "false", "size": "2"}}}, namespace)
    wait_for(lambda: stack_phase(kube, "rb", namespace, "UPDATE_COMPLETE"), 120, what="grown")
    kube.patch("stacks", "rb", {"spec": {"parameters": {"fail": "false", "size": "1"}, "rollback": False}}, namespace)
    obj = wait_for(lambda: stack_phase(kube, "rb", namespace, "UPDATE_FAILED", "UPDATE_COMPLETE"), 120, what="UPDATE_FAILED")
    assert "spec.size cannot shrink" in obj["status"]["stackStatusReason"]
    # Without rollback a failure stays FAILED for inspection.
    kube.patch("stacks", "rb", {"spec": {"parameters": {"fail": "true", "size": "2"}}}, namespace)
    obj = wait_for(lambda: stack_phase(kube, "rb", namespace, "UPDATE_FAILED"), 120, what="UPDATE_FAILED")
    assert "the test resource was told to fail" in obj["status"]["stackStatusReason"]
    # Deletion honours deletion_policy Retain.
    kube.delete("stacks", "rb", namespace)
    wait_for(lambda: kube.get("stacks", "rb", namespace) is None, 120, what="stack deleted")
    assert kube.get("volumes", "rb-data", namespace) is None
    kept = kube.get("volumes", "rb-keep", namespace)
    assert kept is not None and not kept["metadata"].get("ownerReferences")
    assert "stratus.dev/stack" not in (kept["metadata"].get("labels") or {})


def test_hidden_parameters_come_from_labelled_secrets_and_are_never_echoed(kube, operator, namespace):
    template = yaml.safe_dump({
        "heat_template_version": "2021-04-16",
        "parameters": {"db_password": {"type": "string", "hidden": True, "constraints": [{"length": {"min": 8}}]}},
        "resources": {"conn": {"type": "OS::Heat::Value", "properties": {"value": {"str_replace": {
            "template": "postgres://app:PW@db/app", "params": {"PW": {"get_param": "db_password"}}}}}}},
        "outputs": {"url": {"value": {"get_attr": ["conn", "value"]}}, "plain": {"value": "hello"}}})
    kube.core.create_namespaced_secret(namespace, {"metadata": {"name": "unlabelled"}, "stringData": {"pw": "s3cret-pass"}})
    kube.core.create_namespaced_secret(namespace, {"metadata": {"name": "db", "labels": {"stratus.dev/stack-parameters": "true"}},
                                                   "stringData": {"pw": "s3cret-pass"}})
    spec = {"template": template, "parametersFrom": [{"name": "db_password", "secretKeyRef": {"name": "unlabelled", "key": "pw"}}]}
    kube.create("stacks", {"kind": "Stack", "metadata": {"name": "hid"}, "spec": spec}, namespace)
    obj = wait_for(lambda: stack_phase(kube, "hid", namespace, "CREATE_FAILED"), 60, what="unlabelled Secret refused")
    assert kube.condition(obj)["reason"] == "InputNotFound" and "stratus.dev/stack-parameters=true" in obj["status"]["stackStatusReason"]
    kube.patch("stacks", "hid", {"spec": {"parametersFrom": [{"name": "db_password", "secretKeyRef": {"name": "db", "key": "pw"}}]}},
               namespace)
    obj = wait_for(lambda: stack_phase(kube, "hid", namespace, "CREATE_COMPLETE"), 60, what="CREATE_COMPLETE")
    outs = outputs_of(obj)
    assert outs["plain"]["value"] == "hello" and outs["url"]["secret"] and not outs["url"]["value"]
    assert "s3cret-pass" not in json.dumps(obj)
    assert all("s3cret-pass" not in (e.message or "") for e in kube.events_for(namespace, "hid", "Stack"))
    url = base64.b64decode(kube.core.read_namespaced_secret(obj["status"]["outputsSecret"], namespace).data["url"]).decode()
    assert url == "postgres://app:s3cret-pass@db/app"
