"""The HOT engine (core/heat), table-driven: versions, parameters, intrinsics,
conditions, the graph, types, nested templates, ResourceGroups and the step."""

from __future__ import annotations

import json

import pytest
import yaml

from stratus.core.heat import COMPLETE, FAILED, INIT, IN_PROGRESS, Stack, deletion, preview, step
from stratus.core.heat.secrets import inputs_hash, random_string
from stratus.core.heat.stack import object_name

CATALOG = {"nova.flavor": {"m1.small", "m1.large"}, "nova.keypair": {"mine"}, "glance.image": {"cirros"},
           "neutron.network": {"pod", "private", "storage"}}


def tmpl(version="2021-04-16", **sections) -> str:
    return yaml.safe_dump({"heat_template_version": version, **sections})


def value_of(expr, version="2021-04-16", params=None, given=None, files=None, conditions=None):
    """Evaluate ``expr`` as an OS::Heat::Value and return the output."""
    t = tmpl(version, parameters=params or {}, resources={"v": {"type": "OS::Heat::Value", "properties": {"value": expr}}},
             outputs={"o": {"value": {"get_attr": ["v", "value"]}}}, **({"conditions": conditions} if conditions else {}))
    s = Stack(t, name="s", namespace="ns", parameters=given or {}, files=files or {})
    assert s.ok, s.errors
    st = step(s, {})
    return st.outputs["o"]


def errors(template, **kw) -> str:
    s = Stack(template, name="s", namespace="ns", catalog=CATALOG, **kw)
    assert not s.ok, "expected the template to be refused"
    return "; ".join(str(e) for e in s.errors)


# -- versions ---------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["2013-05-23", "2014-10-16", "2015-04-30", "2015-10-15", "2016-04-08",
                                     "2016-10-14", "2017-02-24", "2017-09-01", "2018-03-02", "2018-08-31",
                                     "2021-04-16", "newton", "queens", "wallaby"])
def test_every_version_loads(version):
    s = Stack(f"heat_template_version: {version}\nresources: {{}}\n")
    assert s.ok, s.errors


@pytest.mark.parametrize("template, expected", [
    ("resources: {}", "heat_template_version: missing"),
    ("heat_template_version: 2012-01-01", "unknown version '2012-01-01'"),
    ("AWSTemplateFormatVersion: 2010-09-09", "CloudFormation"),
    ("heat_template_version: 2015-10-15\nconditions: {}", "conditions section needs heat_template_version 2016-10-14"),
    ("heat_template_version: 2021-04-16\nmappings: {}", "mappings: not a section"),
    ("heat_template_version: [", "not valid YAML"),
], ids=["no-version", "unknown-version", "cfn", "conditions-too-early", "unknown-section", "bad-yaml"])
def test_version_and_section_errors(template, expected):
    assert expected in errors(template)


@pytest.mark.parametrize("version, fn, args, message", [
    ("2014-10-16", "Fn::Join", [",", ["a"]], "Fn::Join is not a function of HOT 2014-10-16"),
    ("2021-04-16", "Ref", "x", "Ref is not a function of HOT 2021-04-16"),
    ("2015-04-30", "str_split", [",", "a"], "str_split is not a function of HOT 2015-04-30"),
    ("2016-04-08", "yaql", {"expression": "1"}, "yaql is not a function"),
    ("2016-10-14", "list_concat", [[1]], "list_concat is not a function"),
    ("2017-02-24", "contains", [1, [1]], "contains is not a function"),
    ("2015-10-15", "Fn::Select", [0, [1]], "Fn::Select is not a function"),
], ids=lambda x: x if isinstance(x, str) and len(x) < 20 else None)
def test_function_not_in_version_names_the_path(version, fn, args, message):
    t = tmpl(version, resources={"v": {"type": "OS::Heat::Value", "properties": {"value": {fn: args}}}})
    msg = errors(t)
    assert message in msg and "resources.v.properties.value: " in msg


# -- intrinsics -------------------------------------------------------------------------
@pytest.mark.parametrize("expr, expected", [
    ({"str_replace": {"template": "Hello $who $who2", "params": {"$who": "a", "$who2": "b"}}}, "Hello a b"),
    ({"str_replace": {"template": "x=V", "params": {"V": {"k": 1}}}}, 'x={"k": 1}'),
    ({"list_join": [",", ["a", "b"], ["c"]]}, "a,b,c"),
    ({"list_join": ["-", ["a", {"k": 1}]]}, 'a-{"k": 1}'),
    ({"str_split": [",", "a,b,c"]}, ["a", "b", "c"]),
    ({"str_split": [",", "a,b,c", 1]}, "b"),
    ({"map_merge": [{"a": 1}, {"b": 2}, {"a": 3}]}, {"a": 3, "b": 2}),
    ({"map_replace": {"map": {"k1": "v1", "k2": "v2"}, "keys": {"k1": "K1"}, "values": {"v2": "V2"}}}, {"K1": "v1", "k2": "V2"}),
    ({"list_concat": [[1, 2], [2, 3]]}, [1, 2, 2, 3]),
    ({"list_concat_unique": [[1, 2], [2, 3]]}, [1, 2, 3]),
    ({"repeat": {"for_each": {"%p%": ["80", "443"]}, "template": {"port": "%p%"}}}, [{"port": "80"}, {"port": "443"}]),
    ({"repeat": {"for_each": {"%a%": [1, 2], "%b%": ["x", "y"]}, "template": "%a%%b%", "permutations": False}}, ["1x", "2y"]),
    ({"repeat": {"for_each": {"%a%": [1, 2], "%b%": ["x"]}, "template": "%a%-%b%"}}, ["1-x", "2-x"]),
    ({"contains": ["a", ["a", "b"]]}, True),
    ({"yaql": {"expression": "$.data.nums.where($ > 1).select($ * 10)", "data": {"nums": [1, 2, 3]}}}, [20, 30]),
    ({"yaql": {"expression": "$.data.s.toUpper()", "data": {"s": "abc"}}}, "ABC"),
    ({"make_url": {"scheme": "https", "host": "example.org", "port": 8443, "path": "/a b", "query": {"q": "1"}}},
     "https://example.org:8443/a%20b?q=1"),
    ({"digest": ["sha256", "abc"]}, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    ({"filter": [[None, ""], ["a", None, "b", ""]]}, ["a", "b"]),
    ({"get_param": "OS::stack_name"}, "s"),
    ({"get_param": "OS::stack_id"}, "ns/s"),
    ({"str_replace_strict": {"template": "a-X", "params": {"X": "b"}}}, "a-b"),
], ids=lambda x: next(iter(x)) if isinstance(x, dict) else None)
def test_intrinsics(expr, expected):
    assert value_of(expr) == expected


@pytest.mark.parametrize("expr, expected", [
    ({"Fn::Join": [",", ["a", "b"]]}, "a,b"),
    ({"Ref": "p"}, "x"),
    ({"Fn::Select": [1, ["a", "b"]]}, "b"),
    ({"Fn::Split": [",", "a,b"]}, ["a", "b"]),
    ({"Fn::Replace": [{"$x": "1"}, "v=$x"]}, "v=1"),
    ({"Fn::Base64": "plain"}, "plain"),
], ids=lambda x: next(iter(x)) if isinstance(x, dict) else None)
def test_cfn_functions_in_2013(expr, expected):
    assert value_of(expr, "2013-05-23", params={"p": {"type": "string", "default": "x"}}) == expected


def test_get_param_paths_and_types():
    params = {"j": {"type": "json", "default": {"a": [10, 20]}}, "l": {"type": "comma_delimited_list", "default": "x, y"},
              "n": {"type": "number", "default": "3"}, "b": {"type": "boolean", "default": "yes"}}
    assert value_of({"get_param": ["j", "a", 1]}, params=params) == 20
    assert value_of({"get_param": "l"}, params=params) == ["x", "y"]
    assert value_of({"get_param": "n"}, params=params) == 3
    assert value_of({"get_param": "b"}, params=params) is True


def test_get_file():
    assert value_of({"get_file": "script.sh"}, files={"script.sh": "#!/bin/sh\necho hi\n"}) == "#!/bin/sh\necho hi\n"
    t = tmpl(resources={"v": {"type": "OS::Heat::Value", "properties": {"value": {"get_file": "missing.sh"}}}})
    assert "resources.v.properties.value.get_file: the file 'missing.sh' is not among the stack's files" in errors(t)


# -- parameters -------------------------------------------------------------------------
P = {"type": "string"}


@pytest.mark.parametrize("schema, given, message", [
    ({"type": "string", "constraints": [{"length": {"min": 3}}]}, "ab", "length must be at least 3, is 2"),
    ({"type": "number", "constraints": [{"range": {"min": 1, "max": 5}}]}, "9", "must be between 1 and 5, is 9"),
    ({"type": "string", "constraints": [{"allowed_values": ["a", "b"]}]}, "c", "'c' is not one of the allowed values"),
    ({"type": "string", "constraints": [{"allowed_pattern": "[a-z]+", "description": "lower-case only"}]}, "ABC",
     "lower-case only"),
    ({"type": "string", "constraints": [{"custom_constraint": "nova.flavor"}]}, "m9.huge", "Flavor 'm9.huge' does not exist"),
    ({"type": "string", "constraints": [{"custom_constraint": "nova.keypair"}]}, "theirs", "KeyPair 'theirs' does not exist"),
    ({"type": "string", "constraints": [{"custom_constraint": "glance.image"}]}, "ubuntu", "Image 'ubuntu' does not exist"),
    ({"type": "string", "constraints": [{"custom_constraint": "neutron.network"}]}, "public", "network 'public' does not exist"),
    ({"type": "number"}, "ten", "expected a number"),
    ({"type": "boolean"}, "maybe", "expected a boolean"),
    ({"type": "json"}, "{bad", "expected JSON"),
    ({"type": "number", "constraints": [{"modulo": {"step": 2, "offset": 1}}]}, "4", "must be 1 plus a multiple of 2"),
], ids=["length", "range", "allowed_values", "pattern-description", "nova.flavor", "nova.keypair", "glance.image",
        "neutron.network", "number", "boolean", "json", "modulo"])
def test_parameter_constraints(schema, given, message):
    msg = errors(tmpl(parameters={"p": schema}), parameters={"p": given})
    assert "parameters.p" in msg and message in msg


@pytest.mark.parametrize("schema, given", [
    ({"type": "string", "constraints": [{"custom_constraint": "nova.flavor"}]}, "m1.small"),
    ({"type": "comma_delimited_list", "constraints": [{"allowed_values": ["a", "b"]}]}, "a,b"),
    ({"type": "number", "constraints": [{"range": {"min": 1}}]}, "1"),
    ({"type": "string", "constraints": [{"custom_constraint": "nova.unknown"}]}, "anything"),
])
def test_parameter_constraints_pass(schema, given):
    s = Stack(tmpl(parameters={"p": schema}), catalog=CATALOG, parameters={"p": given})
    assert s.ok, s.errors


@pytest.mark.parametrize("params, groups, given, message", [
    ({"a": P}, None, {}, "parameters.a: no value"),
    ({"a": {"type": "strin"}}, None, {}, "parameters.a.type: 'strin' is not a parameter type"),
    ({"a": {"type": "string", "colour": 1}}, None, {}, "parameters.a.colour: unknown key"),
    ({"a": {"type": "string", "default": "x"}}, None, {"b": "1"}, "parameters.b: given, but the template has no such parameter"),
    ({"a": {"type": "string", "default": "x"}}, [{"parameters": ["zz"]}], {}, "parameter_groups[0].parameters[0]: the parameter 'zz'"),
    ({"a": {"type": "string", "default": "x"}}, [{"parameters": ["a"]}, {"parameters": ["a"]}], {}, "is already in group 0"),
    ({"a": {"type": "string", "constraints": [{"range": {"min": 1}}]}}, None, {"a": "x"}, "a range constraint applies to numbers"),
])
def test_parameter_definition_errors(params, groups, given, message):
    sections = {"parameters": params, **({"parameter_groups": groups} if groups else {})}
    assert message in errors(tmpl(**sections), parameters=given)


def test_environment_parameters_and_defaults():
    t = tmpl(parameters={"a": P, "b": {"type": "string", "default": "tmpl"}},
             resources={"v": {"type": "OS::Heat::Value", "properties": {"value": {"list_join": ["/", [{"get_param": "a"}, {"get_param": "b"}]]}}}},
             outputs={"o": {"value": {"get_attr": ["v", "value"]}}})
    env = "parameters: {a: from-env}\nparameter_defaults: {b: env-default}\n"
    assert step(Stack(t, environment=env), {}).outputs["o"] == "from-env/env-default"
    assert step(Stack(t, environment=env, parameters={"a": "given"}), {}).outputs["o"] == "given/env-default"


def test_hidden_parameter_values_are_sensitive():
    t = tmpl(parameters={"pw": {"type": "string", "hidden": True}},
             resources={"v": {"type": "OS::Heat::Value", "properties": {"value": {"get_param": "pw"}}}})
    s = Stack(t, parameters={"pw": "s3cret-value"})
    assert "s3cret-value" in step(s, {}).sensitive


# -- conditions -------------------------------------------------------------------------
COND_PARAMS = {"env": {"type": "string", "default": "prod"}, "zones": {"type": "comma_delimited_list", "default": "a,b"}}


@pytest.mark.parametrize("conditions, expr, expected", [
    ({"prod": {"equals": [{"get_param": "env"}, "prod"]}}, {"if": ["prod", "big", "small"]}, "big"),
    ({"dev": {"not": {"equals": [{"get_param": "env"}, "prod"]}}}, {"if": ["dev", "big", "small"]}, "small"),
    ({"a": True, "b": {"and": ["a", {"equals": [1, 1]}]}}, {"if": ["b", 1, 2]}, 1),
    ({"a": False, "b": {"or": ["a", {"equals": [1, 2]}]}}, {"if": ["b", 1, 2]}, 2),
    ({"c": {"contains": ["b", {"get_param": "zones"}]}}, {"if": ["c", "yes", "no"]}, "yes"),
    ({"c": {"yaql": {"expression": "$.data.z.len() > 1", "data": {"z": {"get_param": "zones"}}}}}, {"if": ["c", "y", "n"]}, "y"),
    ({"c": {"if": [{"equals": [1, 1]}, True, False]}}, {"if": ["c", "y", "n"]}, "y"),
    ({"s": {"equals": [{"get_param": "env"}, True]}}, {"if": ["s", "y", "n"]}, "n"),
], ids=["equals", "not", "and", "or", "contains", "yaql", "if-in-conditions-2021", "string-vs-boolean-is-false"])
def test_conditions(conditions, expr, expected):
    assert value_of(expr, params=COND_PARAMS, conditions=conditions) == expected


def test_if_with_null_omits_the_property_and_conditions_remove_resources():
    t = tmpl(parameters=COND_PARAMS, conditions={"dev": {"equals": [{"get_param": "env"}, "dev"]}},
             resources={"extra": {"type": "OS::Heat::Value", "condition": "dev", "properties": {"value": 1}},
                        "v": {"type": "OS::Heat::Value", "properties": {"value": {"a": {"if": ["dev", 1, None]}, "b": 2}}}},
             outputs={"o": {"value": {"get_attr": ["v", "value"]}}, "x": {"value": 1, "condition": "dev"}})
    s = Stack(t)
    assert s.ok and "extra" not in s.nodes
    st = step(s, {})
    assert st.outputs == {"o": {"b": 2}}


@pytest.mark.parametrize("conditions, resource_extra, message", [
    ({"a": "b", "b": "a"}, {}, "conditions refer to each other in a cycle"),
    ({"a": {"get_attr": ["v", "value"]}}, {}, "get_attr is not a function of the conditions section"),
    ({}, {"condition": "nope"}, "resources.v.condition: refers to unknown condition 'nope'"),
])
def test_condition_errors(conditions, resource_extra, message):
    t = tmpl(conditions=conditions, resources={"v": {"type": "OS::Heat::Value", "properties": {"value": 1}, **resource_extra}})
    assert message in errors(t)


def test_get_resource_of_a_disabled_resource_is_an_error():
    t = tmpl(conditions={"no": False}, resources={"a": {"type": "OS::Heat::Value", "condition": "no", "properties": {"value": 1}},
                                                  "b": {"type": "OS::Heat::Value", "properties": {"value": {"get_attr": ["a", "value"]}}}})
    assert "resources.b.properties.value: get_attr refers to resource 'a', whose condition is false" in errors(t)


# -- validation of resources ------------------------------------------------------------------
SERVER = {"type": "OS::Nova::Server", "properties": {"flavor": "m1.small", "image": "cirros"}}


@pytest.mark.parametrize("resources, message", [
    ({"web": {"type": "OS::Nova::Server", "properties": {"flavor": {"get_param": "flavour"}, "image": "cirros"}}},
     "resources.web.properties.flavor: get_param refers to unknown parameter 'flavour'"),
    ({"web": SERVER, "o": {"type": "OS::Heat::Value", "properties": {"value": {"get_attr": ["web", "no_such_attr"]}}}},
     "resources.o.properties.value: The Referenced Attribute (web no_such_attr) is incorrect."),
    ({"web": SERVER, "o": {"type": "OS::Heat::Value", "properties": {"value": {"get_resource": "webb"}}}},
     "resources.o.properties.value: get_resource refers to unknown resource 'webb'"),
    ({"net": {"type": "OS::Neutron::Net"}}, "resources.net.type: resource 'net' has type OS::Neutron::Net: Neutron networking"),
    ({"w": {"type": "OS::Heat::WaitCondition"}}, "resource 'w' has type OS::Heat::WaitCondition: wait conditions"),
    ({"x": {"type": "OS::Nova::Serverr"}}, "resource 'x' has type OS::Nova::Serverr: not a resource type Stratus supports"),
    ({"web": {"type": "OS::Nova::Server", "properties": {"flavor": "m1.small", "image": "cirros", "colour": "red"}}},
     "resources.web.properties.colour: unknown property of OS::Nova::Server"),
    ({"web": {"type": "OS::Nova::Server", "properties": {"image": "cirros"}}}, "the property 'flavor' of OS::Nova::Server is required"),
    ({"web": {"type": "OS::Nova::Server", "properties": {"flavor": "m1.small"}}}, "needs image, or a block_device_mapping"),
    ({"web": {"type": "OS::Nova::Server", "properties": {"flavor": "m1.small", "image": "Fedora 40"}}},
     "resources.web.properties.image: image 'Fedora 40' is not a Kubernetes object name"),
    ({"web": {"type": "OS::Nova::Server", "properties": {"flavor": "m1.small", "image": "cirros",
                                                         "networks": [{"port": "p1"}]}}},
     "resources.web.properties.networks[0].port: needs Neutron"),
    ({"a": {"type": "OS::Heat::Value", "properties": {"value": {"get_attr": ["b", "value"]}}},
      "b": {"type": "OS::Heat::Value", "properties": {"value": {"get_attr": ["a", "value"]}}}}, "circular dependency: a -> b -> a"),
    ({"a": {"type": "OS::Heat::Value", "properties": {"value": 1}, "depends_on": ["zz"]}}, "resources.a.depends_on[0]: depends on unknown resource 'zz'"),
    ({"a": {"type": "OS::Heat::Value", "properties": {"value": 1}, "deletion_policy": "Keep"}}, "'Keep' is not Delete, Retain or Snapshot"),
    ({"a": {"type": "OS::Heat::Value", "properties": {"value": 1}, "colour": 1}}, "resources.a.colour: not a key of a resource definition"),
    ({"f": {"type": "OS::Nova::Flavor", "properties": {"ram": 512, "vcpus": 1}}}, "only stacks in namespaces labelled stratus.dev/heat-admin=true"),
    ({"v": {"type": "OS::Cinder::Volume", "properties": {"image": "cirros"}}}, "resources.v.properties.size: is required"),
    ({"r": {"type": "OS::Heat::RandomString", "properties": {"length": 2, "character_classes": [{"class": "digits", "min": 3}]}}},
     "is shorter than the minimums"),
    ({"g": {"type": "OS::Heat::ResourceGroup", "properties": {"count": 2, "resource_def": {"type": "OS::Neutron::Port"}}}},
     "resources.g.properties.resource_def.type: resource '0' has type OS::Neutron::Port"),
], ids=["unknown-param", "unknown-attr", "unknown-resource", "neutron", "waitcondition", "typo-type", "unknown-prop",
        "missing-required", "no-root-disk", "bad-image-name", "neutron-port", "cycle", "depends-unknown", "bad-policy",
        "bad-key", "admin-only", "volume-size", "random-too-short", "group-member-refused"])
def test_validation_errors_name_the_path(resources, message):
    assert message in errors(tmpl(resources=resources))


def test_admin_types_allowed_for_admin_namespaces():
    s = Stack(tmpl(resources={"f": {"type": "OS::Nova::Flavor", "properties": {"ram": 512, "vcpus": 1, "name": "tiny"}}}),
              admin=True, namespace="ops", name="s")
    assert s.ok
    st = step(s, {})
    assert st.apply[0]["kind"] == "Flavor" and st.apply[0]["metadata"]["name"] == "tiny"
    assert "namespace" not in st.apply[0]["metadata"] and st.apply[0]["spec"]["ram"] == "512Mi"


# -- builders ---------------------------------------------------------------------------
def build_of(resource: dict, **kw) -> list[dict]:
    s = Stack(tmpl(resources={"r": resource}), name="s", namespace="ns", **kw)
    assert s.ok, s.errors
    st = step(s, {}, secrets=kw.pop("secrets", None))
    return [o for o in st.apply]


@pytest.mark.parametrize("props, spec", [
    ({"flavor": "m1.small", "image": "cirros", "key_name": "mine"}, {"flavor": "m1.small", "image": "cirros", "keyPair": "mine"}),
    ({"flavor": "m1.small", "image": "cirros", "networks": [{"network": "private"}, {"network": "storage"}]},
     {"flavor": "m1.small", "image": "cirros", "networks": [{"name": "storage"}]}),
    ({"flavor": "m1.small", "block_device_mapping": [{"device_name": "vda", "volume_id": "root"}]},
     {"flavor": "m1.small", "bootVolume": "root"}),
    ({"flavor": "m1.small", "image": "cirros", "scheduler_hints": {"group": "g1"}},
     {"flavor": "m1.small", "image": "cirros", "serverGroup": "g1"}),
    ({"flavor": "m1.small", "image": "cirros", "user_data": "#!/bin/sh\n", "user_data_format": "RAW"},
     {"flavor": "m1.small", "image": "cirros", "userData": "#!/bin/sh\n"}),
], ids=["basic", "networks", "bdm-boot", "group", "user-data"])
def test_server_builder(props, spec):
    objs = build_of({"type": "OS::Nova::Server", "properties": props})
    assert objs[0]["kind"] == "Server" and objs[0]["spec"] == spec
    assert objs[0]["metadata"]["labels"]["stratus.dev/stack"] == "s"


def test_server_boots_from_a_volume_made_from_an_image():
    objs = build_of({"type": "OS::Nova::Server", "properties": {"flavor": "m1.small", "block_device_mapping_v2": [
        {"boot_index": 0, "image": "cirros", "volume_size": 5}, {"volume_id": "data"}]}})
    server, vol = objs[0], objs[1]
    assert vol["kind"] == "Volume" and vol["spec"] == {"size": "5Gi", "source": {"image": "cirros"}}
    assert server["spec"]["bootVolume"] == vol["metadata"]["name"]


@pytest.mark.parametrize("resource, kind, spec", [
    ({"type": "OS::Cinder::Volume", "properties": {"size": 3, "image": "cirros", "volume_type": "fast"}}, "Volume",
     {"size": "3Gi", "source": {"image": "cirros"}, "volumeType": "fast"}),
    ({"type": "OS::Nova::ServerGroup", "properties": {"policies": ["affinity"]}}, "ServerGroup", {"policy": "affinity"}),
    ({"type": "OS::Nova::KeyPair", "properties": {"name": "k", "public_key": "ssh-ed25519 AAAA"}}, "KeyPair",
     {"publicKey": "ssh-ed25519 AAAA"}),
    ({"type": "OS::Swift::Container", "properties": {"X-Container-Read": ".r:*", "PurgeOnDelete": True}}, "Bucket",
     {"bucketClassName": "default", "access": "PublicRead", "forceDelete": True}),
], ids=["volume", "servergroup", "keypair", "container"])
def test_builders(resource, kind, spec):
    objs = build_of(resource)
    assert objs[0]["kind"] == kind and objs[0]["spec"] == spec


def test_software_configs_compose_user_data():
    t = tmpl(resources={
        "cc": {"type": "OS::Heat::CloudConfig", "properties": {"cloud_config": {"packages": ["nginx"]}}},
        "sh": {"type": "OS::Heat::SoftwareConfig", "properties": {"config": "#!/bin/sh\necho hi\n"}},
        "mime": {"type": "OS::Heat::MultipartMime", "properties": {"parts": [{"config": {"get_resource": "cc"}},
                                                                             {"config": {"get_resource": "sh"}}]}},
        "web": {"type": "OS::Nova::Server", "properties": {"flavor": "m1.small", "image": "cirros",
                                                           "user_data_format": "SOFTWARE_CONFIG",
                                                           "user_data": {"get_resource": "mime"}}}})
    s = Stack(t, name="s")
    first = step(s, {})
    server = next(o for o in first.apply if o["kind"] == "Server")
    ud = server["spec"]["userData"]
    assert "Content-Type: multipart/mixed" in ud and "#cloud-config" in ud and "echo hi" in ud
    assert step(s, {}).apply[0]["spec"]["userData"] == ud  # stable across passes


# -- the step ---------------------------------------------------------------------------
STACK = tmpl(
    parameters={"flavor": {"type": "string", "default": "m1.small"}},
    resources={
        "pw": {"type": "OS::Heat::RandomString", "properties": {"length": 16}},
        "vol": {"type": "OS::Cinder::Volume", "properties": {"size": 1}},
        "web": {"type": "OS::Nova::Server", "properties": {"flavor": {"get_param": "flavor"}, "image": "cirros",
                                                           "user_data": {"str_replace": {"template": "pw=$P", "params": {"$P": {"get_attr": ["pw", "value"]}}}}}},
        "att": {"type": "OS::Cinder::VolumeAttachment", "properties": {"instance_uuid": {"get_resource": "web"},
                                                                       "volume_id": {"get_resource": "vol"}}},
        "keep": {"type": "OS::Cinder::Volume", "deletion_policy": "Retain", "properties": {"size": 1}},
    },
    outputs={"ip": {"value": {"get_attr": ["web", "first_address"]}}, "pw": {"value": {"get_attr": ["pw", "value"]}}})


def ready(body, phase, **status):
    body = json.loads(json.dumps(body))
    body["metadata"]["generation"] = 1
    body["status"] = {"phase": phase, "observedGeneration": 1, **status,
                      "conditions": [{"type": "Ready", "status": "True", "reason": "X", "message": ""}]}
    return body


def test_step_creates_in_dependency_order_and_reports_outputs():
    s = Stack(STACK, name="s", namespace="ns")
    first = step(s, {})
    assert [(p, k) for p, k, _ in first.secrets] == [("pw", "random")]
    assert sorted(o["metadata"]["name"] for o in first.apply) == ["s-keep", "s-vol"]
    assert first.states["web"][0] == INIT and first.outputs is None
    secrets = {"pw": {"value": "p" * 16, "hash": first.secrets[0][2]}}
    second = step(s, {}, secrets)
    assert [o["metadata"]["name"] for o in second.apply if o["kind"] == "Server"] == ["s-web"]
    server = next(o for o in second.apply if o["kind"] == "Server")
    assert server["spec"]["userData"] == "pw=" + "p" * 16 and "p" * 16 in second.sensitive
    obs = {"vol": {"Volume/s-vol": ready(next(o for o in first.apply if o["metadata"]["name"] == "s-vol"), "available")},
           "keep": {"Volume/s-keep": ready(next(o for o in first.apply if o["metadata"]["name"] == "s-keep"), "available")},
           "web": {"Server/s-web": ready(server, "ACTIVE", addresses=[{"network": "pod", "address": "10.0.0.5"}])}}
    third = step(s, obs, secrets, attached={})
    assert third.attach == [("s-vol", "s-web", "att")] and third.states["att"][0] == IN_PROGRESS
    done = step(s, obs, secrets, attached={"s-vol": "s-web"})
    assert done.complete and done.outputs == {"ip": "10.0.0.5", "pw": "p" * 16}
    # An update: a new flavor is applied in place.
    s2 = Stack(STACK, name="s", namespace="ns", parameters={"flavor": "m1.large"})
    upd = step(s2, obs, secrets, attached={"s-vol": "s-web"})
    assert [o["spec"]["flavor"] for o in upd.apply] == ["m1.large"] and not upd.replace
    assert [r["action"] for r in preview(s2, obs) if r["resource"] == "web"] == ["Update"]
    # Deletion (attachments are undone first): server and volume together; Retain is released.
    now, retain = deletion(s, obs)
    assert retain == ["keep"] and now == ["vol", "web"]
    # A dependency that still exists holds its dependency back.
    chain = Stack(tmpl(resources={"a": {"type": "OS::Cinder::Volume", "properties": {"size": 1}},
                                  "b": {"type": "OS::Cinder::Volume", "depends_on": "a", "properties": {"size": 1}}}))
    assert deletion(chain, {"a": {"Volume/a": {}}, "b": {"Volume/b": {}}}) == (["b"], [])


def test_failed_child_fails_the_resource():
    s = Stack(tmpl(resources={"vol": {"type": "OS::Cinder::Volume", "properties": {"size": 1}}}), name="s", namespace="ns")
    body = step(s, {}).apply[0]
    broken = ready(body, "error")
    broken["status"]["conditions"][0].update(status="False", message="no storage")
    st = step(s, {"vol": {"Volume/s-vol": broken}})
    assert st.states["vol"][0] == FAILED and "no storage" in st.states["vol"][1]


def test_immutable_change_replaces():
    s = Stack(tmpl(resources={"vol": {"type": "OS::Cinder::Volume", "properties": {"size": 1, "image": "other"}}}), name="s")
    old = ready({"apiVersion": "x", "kind": "Volume", "metadata": {"name": "s-vol"}, "spec": {"size": "1Gi", "source": {"image": "cirros"}}},
                "available")
    st = step(s, {"vol": {"Volume/s-vol": old}})
    assert st.replace == [("Volume", "s-vol")]
    assert preview(s, {"vol": {"Volume/s-vol": old}})[0]["action"] == "Replace"


def test_removed_resources_are_deleted():
    s = Stack(tmpl(resources={}), name="s")
    st = step(s, {"gone": {"Volume/s-gone": {"kind": "Volume", "metadata": {"name": "s-gone"}}}})
    assert st.delete == [("Volume", "s-gone", "gone")]


# -- ResourceGroup and nested templates --------------------------------------------------------
def test_resource_group_expands_with_index_and_removal_policies():
    t = tmpl(resources={"g": {"type": "OS::Heat::ResourceGroup", "properties": {
        "count": 3, "removal_policies": [{"resource_list": ["1"]}],
        "resource_def": {"type": "OS::Cinder::Volume", "properties": {"size": 1, "name": "vol-%index%"}}}}},
        outputs={"refs": {"value": {"get_attr": ["g", "refs"]}}, "names": {"value": {"get_attr": ["g", "display_name"]}},
                 "one": {"value": {"get_attr": ["g", "resource.2.display_name"]}}})
    s = Stack(t, name="s", namespace="ns")
    assert s.ok, s.errors
    st = step(s, {})
    assert sorted(o["metadata"]["name"] for o in st.apply) == ["s-g-0", "s-g-2", "s-g-3"]
    obs = {f"g.{i}": {f"Volume/s-g-{i}": ready(o, "available")} for i, o in zip((0, 2, 3), sorted(st.apply, key=lambda o: o["metadata"]["name"]))}
    done = step(s, obs)
    assert done.outputs == {"refs": ["s-g-0", "s-g-2", "s-g-3"], "names": ["vol-0", "vol-2", "vol-3"], "one": "vol-2"}


def test_resource_group_count_must_be_known():
    t = tmpl(resources={"v": {"type": "OS::Heat::Value", "properties": {"value": 2}},
                        "g": {"type": "OS::Heat::ResourceGroup", "properties": {"count": {"get_attr": ["v", "value"]},
                                                                               "resource_def": {"type": "OS::Heat::None"}}}})
    assert "resources.g.properties.count: must be known before creation" in errors(t)


NESTED = yaml.safe_dump({"heat_template_version": "2016-10-14",
                         "parameters": {"size": {"type": "number"}, "label": {"type": "string", "default": "x"}},
                         "resources": {"vol": {"type": "OS::Cinder::Volume", "properties": {"size": {"get_param": "size"},
                                                                                           "name": {"get_param": "label"}}}},
                         "outputs": {"vol_name": {"value": {"get_attr": ["vol", "display_name"]}}}})


def test_nested_template_by_file_and_registry_alias():
    t = tmpl(resources={"sz": {"type": "OS::Heat::Value", "properties": {"value": 2}},
                        "a": {"type": "disk.yaml", "properties": {"size": {"get_attr": ["sz", "value"]}, "label": "A"}},
                        "b": {"type": "My::Disk", "properties": {"size": 1}}},
             outputs={"a": {"value": {"get_attr": ["a", "vol_name"]}}, "b": {"value": {"get_attr": ["b", "vol_name"]}}})
    s = Stack(t, name="s", namespace="ns", files={"disk.yaml": NESTED}, environment="resource_registry: {My::Disk: disk.yaml}\n")
    assert s.ok, s.errors
    assert set(s.nodes) >= {"a", "a.vol", "b", "b.vol"} and "sz" in s.leaf_deps("a.vol")
    st = step(s, {})
    vols = {o["metadata"]["name"]: o for o in st.apply}
    assert vols["s-a-vol"]["spec"]["size"] == "2Gi" and vols["s-b-vol"]["spec"]["size"] == "1Gi"
    done = step(s, {p: {f"Volume/s-{p.replace('.', '-')}": ready(vols[f"s-{p.replace('.', '-')}"], "available")} for p in ("a.vol", "b.vol")})
    assert done.outputs == {"a": "A", "b": "x"}


@pytest.mark.parametrize("files, nested_props, message", [
    ({}, {"size": 1}, "resources.a.type: the template file 'disk.yaml' is not among the stack's files"),
    ({"disk.yaml": NESTED}, {}, "disk.yaml: parameters.size: no value: the resource 'a' does not set this property"),
    ({"disk.yaml": NESTED}, {"size": 1, "colour": "red"}, "resources.a.properties.colour: the template disk.yaml has no parameter 'colour'"),
    ({"disk.yaml": NESTED.replace("display_name", "nope")}, {"size": 1}, "disk.yaml: outputs.vol_name.value: The Referenced Attribute (vol nope)"),
])
def test_nested_errors(files, nested_props, message):
    t = tmpl(resources={"a": {"type": "disk.yaml", "properties": nested_props}})
    assert message in errors(t, files=files)


def test_deletion_order_without_a_valid_template_deletes_everything():
    now, retain = deletion(None, {"a": {"Volume/x": {}}, "b": {"Server/y": {}}})
    assert now == ["a", "b"] and retain == []


def test_object_names_are_dns_labels():
    name = object_name("a-very-long-stack-name-indeed", "group.17.nested_server_resource_with_long_name")
    assert len(name) <= 63 and name == name.lower() and "_" not in name


def test_random_string_honours_classes():
    props = {"length": 12, "character_classes": [{"class": "digits", "min": 4}, {"class": "uppercase", "min": 2}]}
    value = random_string(props)
    assert len(value) == 12 and sum(c.isdigit() for c in value) >= 4 and sum(c.isupper() for c in value) >= 2
    assert inputs_hash(props) == inputs_hash(dict(props)) != inputs_hash({**props, "salt": "2"})


def test_one_validation_pass_reports_every_error():
    t = tmpl(parameters={"flavor": P},
             resources={"net": {"type": "OS::Neutron::Net"},
                        "web": {"type": "OS::Nova::Server", "properties": {"flavor": {"get_param": "flavour"}, "image": "cirros"}},
                        "v": {"type": "OS::Heat::Value", "properties": {"value": {"get_attr": ["web", "nope"]}}}},
             outputs={"o": {"value": {"get_resource": "missing"}}})
    s = Stack(t, parameters={"flavor": "m1.small"})
    paths = sorted(e.path for e in s.errors)
    assert paths == ["outputs.o.value", "resources.net.type", "resources.v.properties.value", "resources.web.properties.flavor"]


def test_the_sample_stack_validates():
    from stratus.api.stack import Stack as StackModel, sample

    body = sample()
    StackModel.model_validate({**body, "metadata": {"name": "web"}})
    s = Stack(body["spec"]["template"], parameters=body["spec"]["parameters"], catalog=CATALOG)
    assert s.ok, s.errors
    assert s.levels() == [["data", "password"], ["web"], ["attach"]]


def test_a_test_resource_fails_at_creation_not_validation():
    t = tmpl(parameters={"fail": {"type": "boolean", "default": True}},
             resources={"t": {"type": "OS::Heat::TestResource", "properties": {"value": 1, "fail": {"get_param": "fail"}}}})
    s = Stack(t)
    assert s.ok, s.errors
    st = step(s, {})
    assert st.states["t"][0] == FAILED and "told to fail" in st.states["t"][1]


def test_a_hidden_value_is_not_echoed_in_errors():
    t = tmpl(parameters={"pw": {"type": "string", "hidden": True, "constraints": [{"length": {"min": 20}}]}})
    msg = errors(t, parameters={"pw": "short-secret"})
    assert "parameters.pw" in msg and "short-secret" not in msg
