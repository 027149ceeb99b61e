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
