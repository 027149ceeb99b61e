"""Policy rules compiled to ValidatingAdmissionPolicies: templates, scope, names, errors."""

from __future__ import annotations

import pytest

from stratus.core import policy

FLAVORS = [
    {"metadata": {"name": "m1.small"}, "spec": {"vcpus": 1, "ram": "2Gi"}},
    {"metadata": {"name": "m1.medium"}, "spec": {"vcpus": 2, "ram": "4Gi"}},
    {"metadata": {"name": "m1.large"}, "spec": {"vcpus": 4, "ram": "8Gi"}},
    {"metadata": {"name": "m1.xlarge"}, "spec": {"vcpus": 8, "ram": "16Gi"}},
    {"metadata": {"name": "broken"}, "spec": {"vcpus": 1, "ram": "lots"}},
]


@pytest.mark.parametrize(
    "max_vcpus, max_ram, allowed",
    [
        (2, None, ["m1.medium", "m1.small"]),
        (None, "8Gi", ["m1.large", "m1.medium", "m1.small"]),
        (8, "4Gi", ["m1.medium", "m1.small"]),
        (0, None, []),
        (None, None, ["m1.large", "m1.medium", "m1.small", "m1.xlarge"]),
    ],
    ids=["vcpus", "ram", "both-limits", "nothing-fits", "no-limit"],
)
def test_flavors_within(max_vcpus, max_ram, allowed):
    assert policy.flavors_within(FLAVORS, max_vcpus, max_ram) == allowed


@pytest.mark.parametrize(
    "template, resources, expression, message",
    [
        ({"name": "MaxFlavor", "maxVcpus": 2}, ["servers"], 'object.spec.flavor in ["m1.medium", "m1.small"]',
         "spec.flavor: Servers may use flavors of at most 2 vCPUs"),
        ({"name": "MaxFlavor", "maxVcpus": 4, "maxRam": "8192Mi"}, ["servers"],
         'object.spec.flavor in ["m1.large", "m1.medium", "m1.small"]',
         "spec.flavor: Servers may use flavors of at most 4 vCPUs and 8Gi RAM"),
        ({"name": "ImageRegistries", "registries": ["quay.io/containerdisks/", "registry.example.org"]}, ["servers"],
         '!has(object.spec.containerDisk) || ["quay.io/containerdisks", "registry.example.org"]'
         ".exists(r, object.spec.containerDisk.startsWith(r + '/'))",
         "spec.containerDisk: images may come only from quay.io/containerdisks, registry.example.org"),
        ({"name": "NoPublicBuckets"}, ["buckets"],
         "(!has(object.spec.public) || object.spec.public != true) && "
         "(!has(object.spec.access) || object.spec.access != 'public')", "buckets may not be public"),
    ],
    ids=["max-vcpus", "max-vcpus-and-ram", "registries", "no-public-buckets"],
)
def test_templates(template, resources, expression, message):
    match, expr, msg = policy.compile_template(template, FLAVORS)
    assert match["resources"] == resources and expr == expression and msg == message


@pytest.mark.parametrize(
    "template, error",
    [({"name": "ImageRegistries", "registries": []}, "spec.template.registries"), ({"name": "Nope"}, "spec.template.name")],
)
def test_template_errors(template, error):
    with pytest.raises(policy.InvalidRule, match=error):
        policy.compile_template(template, [])


def test_namespaced_rule_binds_to_its_namespace_only():
    spec = {"match": {"resources": ["servers"]}, "expression": "object.spec.flavor != 'x'", "message": "no x"}
    vap, binding, expr = policy.compile_rule(spec, "no-x", "proj-a")
    assert vap["metadata"]["name"] == binding["metadata"]["name"] == "stratus-rule-proj-a-no-x"
    assert binding["spec"]["policyName"] == "stratus-rule-proj-a-no-x"
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "proj-a"}}
    assert binding["spec"]["validationActions"] == ["Deny"]
    rules = vap["spec"]["matchConstraints"]["resourceRules"]
    assert rules == [{"apiGroups": ["stratus.dev"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["servers"]}]
    assert vap["spec"]["validations"] == [{"expression": expr, "message": "no x", "reason": "Forbidden"}]
    assert vap["spec"]["matchConditions"] == [policy.SPEC_CHANGES_ONLY]
    assert "ownerReferences" not in vap["metadata"]  # a namespaced rule cannot own a cluster-scoped policy


def test_cluster_rule_binds_to_every_project_and_is_owned():
    owner = {"apiVersion": "stratus.dev/v1alpha1", "kind": "ClusterPolicyRule", "name": "r", "uid": "1"}
    spec = {"template": {"name": "NoPublicBuckets"}, "enforcement": "Warn", "match": {"operations": ["CREATE"]}}
    vap, binding, _ = policy.compile_rule(spec, "r", None, owner=owner)
    assert vap["metadata"]["name"] == "stratus-clusterrule-r" and vap["metadata"]["ownerReferences"] == [owner]
    assert binding["spec"]["matchResources"]["namespaceSelector"] == {
        "matchExpressions": [{"key": "stratus.dev/project", "operator": "Exists"}]}
    assert binding["spec"]["validationActions"] == ["Warn"]
    rule = vap["spec"]["matchConstraints"]["resourceRules"][0]
    assert rule["operations"] == ["CREATE"] and rule["resources"] == ["buckets"]  # template keeps its kind, match narrows


def test_user_message_wins_over_the_template_default():
    vap, _, _ = policy.compile_rule({"template": {"name": "MaxFlavor", "maxVcpus": 1}, "message": "ask ops"}, "r", "ns", FLAVORS)
    assert vap["spec"]["validations"][0]["message"] == "ask ops"


@pytest.mark.parametrize(
    "spec, error",
    [
        ({"expression": "true", "message": "m"}, "spec.match.resources"),
        ({"expression": "true", "match": {"resources": ["servers"]}}, "spec.message"),
    ],
)
def test_rule_errors(spec, error):
    with pytest.raises(policy.InvalidRule, match=error):
        policy.compile_rule(spec, "r", "ns")


def test_long_names_stay_valid_and_distinct():
    a = policy.policy_name("r" * 250, "ns")
    b = policy.policy_name("r" * 249 + "s", "ns")
    assert len(a) <= 253 and len(b) <= 253 and a != b


@pytest.mark.parametrize("value, literal", [("a", '"a"'), ('q"uote', '"q\\"uote"'), ("back\\slash", '"back\\\\slash"')])
def test_cel_string_escapes(value, literal):
    assert policy.cel_string(value) == literal
