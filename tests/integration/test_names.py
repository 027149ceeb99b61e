"""Names the derived objects could not carry are refused by the API server itself, naming
metadata.name, instead of crash-looping the operator; a Project's namespace is fixed from
creation, set or not."""

from __future__ import annotations

import uuid

import pytest
from kubernetes.client.rest import ApiException


def _refused(fn) -> str:
    with pytest.raises(ApiException) as exc:
        fn()
    assert exc.value.status == 422, exc.value.body
    return exc.value.body


def server(name: str) -> dict:
    return {"kind": "Server", "metadata": {"name": name},
            "spec": {"flavor": "m1.small", "containerDisk": "quay.io/containerdisks/cirros:0.6"}}


def test_names_longer_than_a_label_value_are_refused(kube, crds, namespace):
    body = _refused(lambda: kube.create("servers", server("s" * 64), namespace))
    assert "metadata.name: at most 63 characters" in body
    body = _refused(lambda: kube.create("volumes", {"kind": "Volume", "metadata": {"name": "v" * 252},
                                                     "spec": {"size": "1Gi"}}, namespace))
    assert "metadata.name: at most 63 characters" in body
    # 63 is fine: the limit is exactly the label value's
    kube.create("servers", server("s" * 63), namespace)


@pytest.mark.parametrize("name", ["team.a", "p" * 64, "under_score"])
def test_project_names_that_are_not_namespace_names_are_refused(kube, crds, name):
    body = _refused(lambda: kube.create("projects", {"kind": "Project", "metadata": {"name": name}, "spec": {}}))
    assert "metadata.name" in body


def test_a_dotted_project_name_with_an_explicit_namespace_is_fine(kube, crds):
    name = f"team.{uuid.uuid4().hex[:6]}"
    kube.create("projects", {"kind": "Project", "metadata": {"name": name},
                             "spec": {"namespace": name.replace(".", "-"), "enabled": False}})
    kube.delete("projects", name)


def test_project_namespace_cannot_be_set_after_creation(kube, crds):
    name = f"p-{uuid.uuid4().hex[:6]}"
    kube.create("projects", {"kind": "Project", "metadata": {"name": name}, "spec": {"enabled": False}})
    try:
        body = _refused(lambda: kube.patch("projects", name, {"spec": {"namespace": f"{name}-second"}}))
        assert "spec.namespace cannot be set or removed" in body
    finally:
        kube.delete("projects", name)


@pytest.mark.parametrize("kind, body, field", [
    ("volumes", {"metadata": {"name": "huge"}, "spec": {"size": "999999Pi"}}, "spec.size"),
    ("volumes", {"metadata": {"name": "tiny"}, "spec": {"size": "1"}}, "spec.size"),
    ("volumes", {"metadata": {"name": "me"}, "spec": {"size": "1Gi", "source": {"volume": "me"}}}, "spec.source.volume"),
    ("servers", {"metadata": {"name": "twice"}, "spec": {"flavor": "m1.small", "containerDisk": "quay.io/containerdisks/cirros:0.6",
                                                         "networks": [{"name": "a"}, {"name": "a"}]}}, "spec.networks"),
    ("buckets", {"metadata": {"name": "ip"}, "spec": {"bucketClassName": "default", "bucketName": "192.168.1.10"}}, "spec.bucketName"),
    ("buckets", {"metadata": {"name": "puny"}, "spec": {"bucketClassName": "default", "bucketName": "xn--bcher-kva"}}, "spec.bucketName"),
])
def test_values_the_world_cannot_hold_are_refused(kube, crds, namespace, kind, body, field):
    body = {"kind": {"volumes": "Volume", "servers": "Server", "buckets": "Bucket"}[kind], **body}
    message = _refused(lambda: kube.create(kind, body, namespace))
    assert field in message, message


@pytest.mark.parametrize("body, field", [
    ({"metadata": {"name": "onebyte"}, "spec": {"vcpus": 1, "ram": "1"}}, "spec.ram"),
])
def test_cluster_scoped_values_the_world_cannot_hold_are_refused(kube, crds, body, field):
    message = _refused(lambda: kube.create("flavors", {"kind": "Flavor", **body}))
    assert field in message, message


def test_a_checksum_of_the_wrong_length_for_its_type_is_refused(kube, crds):
    from stratus.api.baremetalnode import sample

    node = sample(f"bmn-{uuid.uuid4().hex[:6]}",
                  image={"url": "http://example.test/img.qcow2", "checksum": "a" * 64, "checksumType": "md5"})
    message = _refused(lambda: kube.create("baremetalnodes", node))
    assert "spec.image.checksum" in message, message
