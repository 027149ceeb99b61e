"""Public HOT templates (PyPI source distributions pinned in hack/hot-corpus.txt, fetched and
cached by hack/hot-corpus.sh) through the Heat engine the operator runs: every template is
either accepted or refused with reasons that name where in the template the problem is, as
Heat's own messages do; none makes the engine raise (no cluster needed for that). Then a
few accepted ones, of different resource types, run unchanged as Stacks on the real API
server with the operator: CREATE_COMPLETE, and deletion leaves nothing.
benchmarks/orchestration/corpus.py writes the same verdicts, with counts, to corpus.md."""

from __future__ import annotations

import hashlib

import pytest

from benchmarks.orchestration import corpus

from .kube import wait_for
from .test_buckets import ensure_bucket_class
from .test_images import image_body, image_store, qcow2, web, web_root  # noqa: F401  (fixtures)
from .test_stacks import stack_phase

#: Accepted templates run on the cluster (a server, a server in an anti-affinity group, a
#: Swift container), and what they name that a cloud would already have.
ON_CLUSTER = {"hot_hello_world.yaml": "hello", "nfv/hot_policy_anti_affinity.yaml": "spread",
              "hot_single_object_store.yaml": "store"}
FLAVOR, IMAGE = "m1.medium", "rhel-6.5-test-image"


@pytest.fixture(scope="module")
def verdicts():
    return corpus.run()


def test_the_corpus_is_there(verdicts):
    assert len(verdicts) >= 80, [v.source for v in verdicts]


def test_every_refusal_names_its_place_in_the_template(verdicts):
    refused = [v for v in verdicts if not v.with_params]
    assert refused, "the corpus has templates using types Stratus refuses; each must say so"
    for v in refused:
        assert v.reasons, v.source
        for reason in v.reasons:
            assert corpus.PATH_RE.match(reason), f"{v.source}: {reason}"


def test_neutron_and_in_guest_agents_are_refused_by_type_never_half_accepted(verdicts):
    for v in verdicts:
        unsupported = [t for t in v.resource_types if t.startswith(("OS::Neutron::", "OS::Heat::SoftwareDeployment"))]
        if unsupported:
            assert not v.with_params, v.source
            assert any(t in " ".join(v.reasons) for t in unsupported), (v.source, v.reasons)


def test_templates_of_supported_types_are_accepted(verdicts):
    # Server, Volume and attachment, key pair, random string, resource group: what Stratus maps.
    simple = {"OS::Nova::Server", "OS::Cinder::Volume", "OS::Cinder::VolumeAttachment", "OS::Nova::KeyPair",
              "OS::Heat::RandomString", "OS::Heat::ResourceGroup"}
    candidates = [v for v in verdicts if v.resource_types and set(v.resource_types) <= simple]
    assert candidates
    refused = [(v.source, v.reasons[:1]) for v in candidates if not v.with_params
               and not any("needs image" in r for r in v.reasons)]  # Heat refuses a server with nothing to boot too
    assert not refused, refused


def test_accepted_templates_run_unchanged_on_the_cluster(kube, operator, namespace, image_store, web, qcow2,  # noqa: F811
                                                         s3_endpoint, verdicts):
    accepted = {v.source.split(":", 1)[1] for v in verdicts if v.as_is}
    assert set(ON_CLUSTER) <= accepted
    if kube.get("flavors", FLAVOR) is None:
        kube.create("flavors", {"kind": "Flavor", "metadata": {"name": FLAVOR}, "spec": {"vcpus": 1, "ram": "1Gi"}})
    fname, data = qcow2
    kube.create("images", image_body(IMAGE, f"{web}/{fname}", hashlib.sha256(data).hexdigest()), namespace)
    wait_for(lambda: (kube.get("images", IMAGE, namespace) or {}).get("status", {}).get("phase") == "active", 120,
             what="the image the templates name")
    ensure_bucket_class(kube, s3_endpoint)
    folder = corpus.sources()[0][1]
    for rel, name in ON_CLUSTER.items():
        template = (folder / rel).read_text()
        kube.create("stacks", {"kind": "Stack", "metadata": {"name": name}, "spec": {"template": template}}, namespace)
    for rel, name in ON_CLUSTER.items():
        obj = wait_for(lambda: stack_phase(kube, name, namespace, "CREATE_COMPLETE", "CREATE_FAILED", "ROLLBACK_COMPLETE"),
                       300, what=f"{rel} CREATE_COMPLETE")
        assert obj["status"]["phase"] == "CREATE_COMPLETE", (rel, obj["status"].get("stackStatusReason"))
    servers = {s["metadata"]["name"]: s for s in
               kube.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", namespace, "servers")["items"]}
    assert {s["status"]["phase"] for s in servers.values()} == {"ACTIVE"} and len(servers) == 2
    assert any(s["spec"].get("serverGroup") for s in servers.values())
    buckets = kube.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", namespace, "buckets")["items"]
    assert [b["status"]["phase"] for b in buckets] == ["Bound"]
    for name in ON_CLUSTER.values():
        kube.delete("stacks", name, namespace)
    for name in ON_CLUSTER.values():
        wait_for(lambda: kube.get("stacks", name, namespace) is None, 300, what=f"stack {name} deleted")
    for plural in ("servers", "servergroups", "buckets"):
        assert kube.custom.list_namespaced_custom_object("stratus.dev", "v1alpha1", namespace, plural)["items"] == []
