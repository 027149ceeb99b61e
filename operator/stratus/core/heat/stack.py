"""A stack: a validated template with its parameters, conditions, resources (nested
templates and ResourceGroup members expanded), dependency graph and outputs, and the
pure step that says, given what exists, what to create, change, replace or delete next.

Resource paths name every resource in the expanded stack: ``web`` at the top,
``group.0`` for a ResourceGroup member, ``db.server`` for a resource of the nested
template behind ``db``. Children carry their path (annotation) so the controller can
hand back what exists as ``observed[path] = {kind: object}``.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import re

import yaml

from . import parameters as P
from .errors import HeatError, ValidationFailed, join
from .functions import OMIT, Evaluator, Pending, Placeholder, _select, has_placeholder
from .types import CLUSTER_KINDS, PLURALS, TYPES, Build, Ctx, Observed, ResourceType, object_state, refused
from .versions import Version, detect

RESOURCE_KEYS = {"type", "properties", "metadata", "depends_on", "deletion_policy", "update_policy", "condition",
                 "description", "external_id"}
GROUP_TYPE = "OS::Heat::ResourceGroup"
GROUP_PROPS = {"count", "resource_def", "index_var", "removal_policies", "removal_policies_mode"}
GROUP_ATTRS = {"refs", "refs_map", "attributes", "removed_rsrc_list", "show"}
MAX_NESTING = 5
LABEL_STACK = "stratus.dev/stack"
LABEL_RESOURCE = "stratus.dev/stack-resource"
ANNOTATION_RESOURCE = "stratus.dev/stack-resource-path"


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str, what: str = "template") -> object:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506  (a safe loader: the C one when built)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise HeatError("", f"the {what} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None


def object_name(stack: str, path: str) -> str:
    """The child's object name: <stack>-<path>, as a DNS label of at most 63 characters."""
    raw = re.sub(r"[^a-z0-9-]+", "-", f"{stack}-{path}".lower()).strip("-")
    if len(raw) <= 52:
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{raw[:52].rstrip('-')}-{digest}"


def label_value(path: str) -> str:
    raw = re.sub(r"[^A-Za-z0-9_.-]+", "_", path)
    if len(raw) <= 63:
        return raw.strip("._-") or "x"
    return raw[:54].rstrip("._-") + "-" + hashlib.sha256(path.encode()).hexdigest()[:8]


@dataclasses.dataclass
class Node:
    path: str
    name: str
    type: str
    snippet: dict
    scope: "Scope"
    where: str                                 # the error path of the definition
    rtype: ResourceType | None = None
    composite: str = ""                        # "" | group | nested
    deps: set = dataclasses.field(default_factory=set)   # paths
    children: list = dataclasses.field(default_factory=list)
    deletion_policy: str = "Delete"
    index: str | None = None                   # a ResourceGroup member's index
    nested: "Scope | None" = None


class _LazyParams(collections.abc.Mapping):
    """A nested template's parameters: its resource's properties, evaluated in the
    parent when read (so a nested stack waits for what its properties refer to)."""

    def __init__(self, values: dict, lazy: dict, convert):
        self.values, self.lazy, self.convert = values, lazy, convert

    def __getitem__(self, key):
        if key in self.values:
            return self.values[key]
        if key in self.lazy:
            return self.convert(key, self.lazy[key]())
        raise KeyError(key)

    def __iter__(self):
        return iter(set(self.values) | set(self.lazy))

    def __len__(self):
        return len(set(self.values) | set(self.lazy))


class Scope:
    """One template (the stack's or a nested one) being evaluated."""

    def __init__(self, stack: "Stack", template: dict, version: Version, params, prefix: str, where: str,
                 facade: dict | None = None):
        self.stack, self.template, self.version, self.params = stack, template, version, params
        self.prefix, self.where = prefix, where
        self.stack_name, self.stack_id, self.project_id = stack.name, stack.stack_id, stack.namespace
        self.files = stack.files
        self.facade_snippet = facade
        self.nodes: dict[str, Node] = {}        # local name -> node
        self.disabled: set[str] = set()
        self.conditions: dict[str, bool] = {}
        self.lookup = None                      # set for runtime evaluation

    def path_of(self, name: str) -> str:
        return f"{self.prefix}{name}"

    # Scope protocol (functions.py)
    def has_resource(self, name):
        return name in self.nodes or name in self.disabled

    def resource_enabled(self, name):
        return name in self.nodes

    def attribute_error(self, name, attr):
        node = self.nodes[name]
        if self.stack.attribute_known(node, attr):
            return None
        return f"The Referenced Attribute ({name} {attr}) is incorrect."

    def facade(self, section):
        if self.facade_snippet is None:
            raise HeatError(self.where, "resource_facade is only for nested templates")
        return self.facade_snippet.get(section)

    def evaluator(self, deps=None, lookup=None, conditions_only=False):
        return Evaluator(self, lookup if lookup is not None else self.lookup, deps, conditions_only, self.condition)

    def condition(self, name, path):
        if isinstance(name, bool):
            return name
        if name not in self.conditions:
            raise HeatError(path, f"refers to unknown condition {name!r}")
        return self.conditions[name]


class Stack:
    """Load with ``Stack(template=..., ...)``; ``errors`` lists everything wrong. Raises
    nothing: a caller checks ``ok`` (or calls ``validate()`` to raise ValidationFailed)."""

    def __init__(self, template: object, *, name: str = "stack", namespace: str = "default", stack_id: str = "",
                 files: dict | None = None, environment: object = None, parameters: dict | None = None,
                 catalog: dict | None = None, admin: bool = False, bucket_class: str = "default"):
        self.name, self.namespace, self.stack_id = name, namespace, stack_id or f"{namespace}/{name}"
        self.files = dict(files or {})
        self.catalog, self.admin, self.bucket_class = catalog, admin, bucket_class
        self.nodes: dict[str, Node] = {}
        self.errors: list[HeatError] = []
        self.warnings: list[str] = []
        self.hidden_values: list[str] = []
        self.root: Scope | None = None
        self.registry: dict[str, str] = {}
        self._parsed: dict[str, object] = {}
        try:
            if isinstance(template, str):
                template = load_yaml(template)
            env = load_yaml(environment, "environment") if isinstance(environment, str) else (environment or {})
            if not isinstance(env, dict):
                raise HeatError("environment", "must be a map")
            bad = set(env) - {"parameters", "parameter_defaults", "resource_registry", "event_sinks", "encrypted_param_names"}
            if bad:
                raise HeatError(f"environment.{sorted(bad)[0]}", "unknown section; use parameters, parameter_defaults, "
                                                                "resource_registry")
            registry = env.get("resource_registry") or {}
            for key, value in registry.items():
                if key == "resources":
                    self.errors.append(HeatError("environment.resource_registry.resources",
                                                 "per-resource registry entries are not supported"))
                    continue
                if not isinstance(value, str):
                    raise HeatError(f"environment.resource_registry.{key}", "must map a type to a type or template file")
                self.registry[key] = value
            params = {**(env.get("parameters") or {}), **(parameters or {})}
            self.root = self._scope(template, params, env.get("parameter_defaults") or {}, "", "", None, 0)
        except HeatError as exc:
            self.errors.append(exc)
        if self.root is not None:
            # Even after an error, the rest is checked: one pass reports everything.
            self._graph()

    @property
    def ok(self) -> bool:
        return not self.errors

    def validate(self) -> "Stack":
        if self.errors:
            raise ValidationFailed(self.errors)
        return self

    # -- loading ------------------------------------------------------------------------
    def _scope(self, template, given: dict, defaults: dict, prefix: str, where: str, parent: Node | None, depth: int,
               lazy: dict | None = None) -> Scope:
        version = detect(template)
        pre = f"{where}: " if where else ""
        unknown = set(template) - version.sections
        for key in sorted(unknown):
            if key == "conditions":
                raise HeatError(f"{pre}conditions", f"the conditions section needs heat_template_version 2016-10-14 "
                                                    f"or later (this template is {version.date})")
            raise HeatError(f"{pre}{key}", "not a section of a HOT template")
        schemas = P.parse_schemas(template.get("parameters"), f"{pre}parameters")
        P.check_groups(template.get("parameter_groups"), schemas, f"{pre}parameter_groups")
        if lazy is None:
            values, errors = P.resolve(schemas, given, defaults, self.catalog, f"{pre}parameters")
            self.errors.extend(errors)
            for name, schema in schemas.items():
                if schema.get("hidden") and isinstance(values.get(name), str) and values[name]:
                    self.hidden_values.append(values[name])
            params = values
        else:
            given_now = {k: v for k, v in given.items()}
            missing = [k for k in schemas if k not in given_now and k not in lazy and "default" not in schemas[k]]
            for k in missing:
                self.errors.append(HeatError(f"{pre}parameters.{k}", f"no value: the resource {parent.path!r} does not "
                                                                      "set this property and there is no default"))
            for k in list(lazy) + list(given_now):
                if k not in schemas:
                    self.errors.append(HeatError(f"{parent.where}.properties.{k}",
                                                 f"the template {where} has no parameter {k!r}"))
            defaults_only = {k: schemas[k]["default"] for k in schemas if k not in lazy and "default" in schemas[k]}

            def convert(key, value, schemas=schemas, pre=pre):
                if value is None and "default" in schemas[key]:
                    value = schemas[key]["default"]
                if has_placeholder(value):
                    return value
                value = P.convert(schemas[key]["type"], value, f"{pre}parameters.{key}")
                P.check_constraints(key, schemas[key], value, f"{pre}parameters.{key}", self.catalog)
                return value
            params = _LazyParams({k: P.convert(schemas[k]["type"], v, f"{pre}parameters.{k}") for k, v in defaults_only.items()},
                                 {k: v for k, v in lazy.items() if k in schemas}, convert)
        scope = Scope(self, template, version, params, prefix, where,
                      (parent.snippet if parent is not None else None))
        if self.root is None:
            self.root = scope
        self._conditions(scope, pre)
        resources = template.get("resources") or {}
        if not isinstance(resources, dict):
            raise HeatError(f"{pre}resources", "must be a map of resource names to definitions")
        for name, snippet in resources.items():
            rwhere = f"{pre}resources.{name}"
            try:
                self._resource(scope, name, snippet, rwhere, depth)
            except HeatError as exc:
                self.errors.append(exc)
        outputs = template.get("outputs") or {}
        if not isinstance(outputs, dict):
            self.errors.append(HeatError(f"{pre}outputs", "must be a map"))
        return scope

    def _conditions(self, scope: Scope, pre: str) -> None:
        section = scope.template.get("conditions") or {}
        if not isinstance(section, dict):
            raise HeatError(f"{pre}conditions", "must be a map of names to conditions")
        visiting: set[str] = set()

        def resolve(name, path):
            if isinstance(name, bool):
                return name
            if name in scope.conditions:
                return scope.conditions[name]
            if name not in section:
                raise HeatError(path, f"refers to unknown condition {name!r}")
            if name in visiting:
                raise HeatError(f"{pre}conditions.{name}", "conditions refer to each other in a cycle")
            visiting.add(name)
            expr = section[name]
            ev = scope.evaluator(conditions_only=True)
            ev.resolve_condition = resolve
            value = ev._condition(expr, f"{pre}conditions.{name}") if not isinstance(expr, bool) else expr
            if isinstance(value, Placeholder):
                raise HeatError(f"{pre}conditions.{name}", "a condition cannot depend on resources")
            visiting.discard(name)
            scope.conditions[name] = bool(value)
            return scope.conditions[name]
        for name in section:
            resolve(name, f"{pre}conditions.{name}")

    def _resource(self, scope: Scope, name: str, snippet, where: str, depth: int) -> None:
        if not isinstance(snippet, dict) or "type" not in snippet:
            raise HeatError(where, "a resource is a map with at least 'type'")
        bad = set(snippet) - RESOURCE_KEYS
        if bad:
            raise HeatError(f"{where}.{sorted(bad)[0]}", "not a key of a resource definition")
        if "condition" in snippet:
            if not scope.version.has_conditions:
                raise HeatError(f"{where}.condition", "needs heat_template_version 2016-10-14 or later")
            cond = snippet["condition"]
            enabled = scope.condition(cond, f"{where}.condition") if isinstance(cond, (str, bool)) else \
                scope.evaluator(conditions_only=True)._condition(cond, f"{where}.condition")
            if not enabled:
                scope.disabled.add(name)
                return
        if snippet.get("external_id"):
            raise HeatError(f"{where}.external_id", "adopting existing objects is not supported")
        policy = snippet.get("deletion_policy", "Delete")
        if policy not in ("Delete", "Retain", "Snapshot"):
            raise HeatError(f"{where}.deletion_policy", f"{policy!r} is not Delete, Retain or Snapshot")
        type_name = snippet["type"]
        if not isinstance(type_name, str):
            raise HeatError(f"{where}.type", "must be a string")
        node = Node(scope.path_of(name), name, type_name, snippet, scope, where,
                    deletion_policy="Retain" if policy == "Retain" else "Delete")
        if policy == "Snapshot":
            self.warnings.append(f"{where}.deletion_policy: Snapshot is treated as Delete")
        scope.nodes[name] = node
        self._typed(node, depth)

    def _typed(self, node: Node, depth: int) -> None:
        """Give a node its type: a Stratus-mapped type, a ResourceGroup, or a nested template."""
        type_name = self.registry.get(node.type, node.type)
        if type_name.endswith((".yaml", ".yml", ".template", ".json")) or type_name in self.files:
            node.composite = "nested"
            node.type = type_name
            if depth >= MAX_NESTING:
                raise HeatError(f"{node.where}.type", f"nested more than {MAX_NESTING} levels deep")
            if type_name not in self.files:
                raise HeatError(f"{node.where}.type", f"the template file {type_name!r} is not among the stack's files")
            self.nodes[node.path] = node
            return
        if type_name == GROUP_TYPE:
            node.composite = "group"
            node.type = type_name
            self.nodes[node.path] = node
            return
        why = refused(type_name)
        if why:
            raise HeatError(f"{node.where}.type", f"resource {node.name!r} has type {type_name}: {why}")
        rt = TYPES[type_name]
        if rt.admin and not self.admin:
            raise HeatError(f"{node.where}.type", f"resource {node.name!r} has type {type_name}, which creates a "
                            "cluster-wide object: only stacks in namespaces labelled stratus.dev/heat-admin=true may")
        node.rtype, node.type = rt, type_name
        props = node.snippet.get("properties") or {}
        if isinstance(props, dict) and type_name != "OS::Heat::None":  # None takes anything, as in Heat
            for key in props:
                if key not in rt.properties:
                    raise HeatError(f"{node.where}.properties.{key}", f"unknown property of {type_name}")
                if key in rt.ignored:
                    self.warnings.append(f"{node.where}.properties.{key}: ignored (nothing to honour it on Kubernetes)")
            for key in sorted(rt.required - set(props)):
                raise HeatError(f"{node.where}.properties", f"the property {key!r} of {type_name} is required")
        self.nodes[node.path] = node

    # -- expansion and the graph ----------------------------------------------------------
    def _graph(self) -> None:
        queue = list(self.nodes.values())
        while queue:
            node = queue.pop(0)
            try:
                node.deps = self._static_deps(node)
                if node.composite:
                    queue.extend(self._expand(node))
            except HeatError as exc:
                self.errors.append(exc)
        for node in list(self.nodes.values()):
            # Members and nested resources wait for what their composite waits for.
            parent = self._parent(node)
            while parent is not None:
                node.deps |= parent.deps
                parent = self._parent(parent)
        self._check_cycles()
        self._check_outputs(self.root)

    def _parent(self, node: Node) -> Node | None:
        if "." not in node.path:
            return None
        return self.nodes.get(node.path.rsplit(".", 1)[0])

    def _static_deps(self, node: Node) -> set:
        deps: set = set()
        scope = node.scope
        snippet = node.snippet
        ev = scope.evaluator(deps=deps)
        for key in ("properties", "metadata"):
            if key in snippet:
                try:
                    value = ev.evaluate(snippet[key], f"{node.where}.{key}")
                except HeatError:
                    raise
                if key == "properties" and node.rtype is not None:
                    self._trial_build(node, value or {})
        for i, dep in enumerate(_as_list(snippet.get("depends_on"))):
            if not isinstance(dep, str) or not scope.has_resource(dep):
                raise HeatError(f"{node.where}.depends_on" + (f"[{i}]" if isinstance(snippet.get("depends_on"), list) else ""),
                                f"depends on unknown resource {dep!r}")
            if scope.resource_enabled(dep):
                deps.add(dep)
        if node.name in deps:
            raise HeatError(node.where, "refers to itself")
        return {scope.path_of(d) for d in deps}

    def _trial_build(self, node: Node, props: dict) -> None:
        """Run the builder on the properties as known before creation (placeholders for
        what only resources will tell), so property errors surface at validation."""
        try:
            build = node.rtype.build(self._ctx(node, {}, dry_run=True), props) if node.rtype.build else Build()
        except HeatError as exc:
            raise HeatError(f"{node.where}.{exc.path}" if exc.path else node.where, exc.message) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise HeatError(f"{node.where}.properties", f"invalid: {exc}") from None
        self.warnings.extend(f"{node.where}: {w}" for w in build.warnings)

    def _ctx(self, node: Node, secret: dict, configs: dict | None = None, dry_run: bool = False) -> Ctx:
        return Ctx(name=self.object_name(node), stack=self.name, namespace=self.namespace, resource=node.path,
                   secret=secret, configs=configs or {}, bucket_class=self.bucket_class, dry_run=dry_run)

    def object_name(self, node: Node) -> str:
        if node.type == "OS::Nova::Flavor":
            props = node.snippet.get("properties") or {}
            if isinstance(props.get("name"), str) and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", props["name"]):
                return props["name"]
            return object_name(f"{self.namespace}-{self.name}", node.path)
        if node.type == "OS::Cinder::VolumeType":
            return object_name(f"{self.namespace}-{self.name}", node.path)
        return object_name(self.name, node.path)

    def _expand(self, node: Node) -> list[Node]:
        scope = node.scope
        props_snippet = node.snippet.get("properties") or {}
        if not isinstance(props_snippet, dict):
            raise HeatError(f"{node.where}.properties", "must be a map")
        if node.composite == "nested":
            if node.type not in self._parsed:  # parsed once, however many members use it (read-only after)
                text = self.files[node.type]
                self._parsed[node.type] = load_yaml(text, f"template {node.type}") if isinstance(text, str) else text
            template = self._parsed[node.type]
            depth = node.path.count(".") + 1
            lazy = {k: (lambda k=k: scope.evaluator().evaluate(props_snippet[k], f"{node.where}.properties.{k}"))
                    for k in props_snippet}
            before = set(self.nodes)
            nested = self._scope(template, {}, {}, f"{node.path}.", node.type, node, depth, lazy)
            node.nested = nested
            for p in props_snippet:
                scope.evaluator(deps=set()).evaluate(props_snippet[p], f"{node.where}.properties.{p}")
            new = [n for path, n in self.nodes.items() if path not in before]
            node.children = [n.path for n in nested.nodes.values()]
            return new
        # ResourceGroup
        for key in props_snippet:
            if key not in GROUP_PROPS:
                raise HeatError(f"{node.where}.properties.{key}", f"unknown property of {GROUP_TYPE}")
        if "resource_def" not in props_snippet:
            raise HeatError(f"{node.where}.properties", "the property 'resource_def' of OS::Heat::ResourceGroup is required")
        ev = scope.evaluator()
        count = ev.evaluate(props_snippet.get("count", 1), f"{node.where}.properties.count")
        if isinstance(count, Placeholder):
            raise HeatError(f"{node.where}.properties.count", "must be known before creation (a parameter, not an attribute)")
        try:
            count = int(count)
        except (TypeError, ValueError):
            raise HeatError(f"{node.where}.properties.count", f"must be a whole number, got {count!r}") from None
        if count < 0:
            raise HeatError(f"{node.where}.properties.count", "cannot be negative")
        index_var = ev.evaluate(props_snippet.get("index_var", "%index%"), f"{node.where}.properties.index_var")
        removed: list[str] = []
        for i, policy in enumerate(ev.evaluate(props_snippet.get("removal_policies") or [], f"{node.where}.properties.removal_policies")):
            removed += [str(x) for x in (policy or {}).get("resource_list") or []]
        rdef = props_snippet["resource_def"]
        if not isinstance(rdef, dict) or "type" not in rdef:
            raise HeatError(f"{node.where}.properties.resource_def", "needs a type")
        bad = set(rdef) - {"type", "properties", "metadata"}
        if bad:
            raise HeatError(f"{node.where}.properties.resource_def.{sorted(bad)[0]}", "not a key of resource_def")
        indexes, i = [], 0
        while len(indexes) < count:
            if str(i) not in removed:
                indexes.append(str(i))
            i += 1
        members = []
        for idx in indexes:
            member_snippet = _substitute(rdef, index_var, idx)
            member = Node(f"{node.path}.{idx}", idx, member_snippet["type"], member_snippet, scope,
                          f"{node.where}.properties.resource_def", index=idx, deletion_policy=node.deletion_policy)
            self._typed(member, node.path.count(".") + 1)
            members.append(member)
        node.children = [m.path for m in members]
        node.removed = removed  # type: ignore[attr-defined]
        if not members:
            # Still validate the definition once, so an empty group is checked too.
            probe = Node(f"{node.path}.probe", "probe", rdef["type"], _substitute(rdef, index_var, "0"), scope,
                         f"{node.where}.properties.resource_def")
            self._typed(probe, node.path.count(".") + 1)
            self.nodes.pop(probe.path, None)
            self._static_deps(probe)
        return members

    def _check_cycles(self) -> None:
        state: dict[str, int] = {}
        stack: list[str] = []

        def visit(path):
            state[path] = 1
            stack.append(path)
            for dep in sorted(self.nodes[path].deps):
                if dep not in self.nodes:
                    continue
                if state.get(dep) == 1:
                    cycle = stack[stack.index(dep):] + [dep]
                    raise HeatError(f"{self.nodes[path].where}", "circular dependency: " + " -> ".join(cycle))
                if dep not in state:
                    visit(dep)
            stack.pop()
            state[path] = 2
        try:
            for path in list(self.nodes):
                if path not in state:
                    visit(path)
        except HeatError as exc:
            self.errors.append(exc)

    def _check_outputs(self, scope: Scope) -> None:
        pre = f"{scope.where}: " if scope.where else ""
        for name, out in (scope.template.get("outputs") or {}).items():
            where = f"{pre}outputs.{name}"
            if not isinstance(out, dict) or "value" not in out:
                self.errors.append(HeatError(where, "an output needs a value"))
                continue
            if "condition" in out and not scope.condition(out["condition"], f"{where}.condition") \
                    if isinstance(out.get("condition"), (str, bool)) else False:
                continue
            try:
                scope.evaluator(deps=set()).evaluate(out["value"], f"{where}.value")
            except HeatError as exc:
                self.errors.append(exc)
        for node in self.nodes.values():
            if node.composite == "nested" and node.nested is not None and node.nested is not scope and node.scope is scope:
                self._check_outputs(node.nested)

    def attribute_known(self, node: Node, attr: str) -> bool:
        if node.composite == "group":
            if attr in GROUP_ATTRS or attr.startswith("resource."):
                return True
            members = [self.nodes[c] for c in node.children if c in self.nodes]
            if not members:
                return True
            return self.attribute_known(members[0], attr)
        if node.composite == "nested":
            if node.nested is None:
                return True
            outputs = node.nested.template.get("outputs") or {}
            return attr in outputs or attr.startswith("resource.") or attr == "show"
        if node.rtype is None or node.rtype.any_attribute:
            return True  # a refused type is reported once, where it is defined
        return attr in node.rtype.attributes

    # -- ordering -------------------------------------------------------------------------
    def leaves(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.composite]

    def order(self) -> list[str]:
        """Leaf paths in a dependency order (dependencies first), stable by name."""
        done: list[str] = []
        seen: set[str] = set()

        def leaf_deps(path):
            node = self.nodes[path]
            out = set()
            for dep in node.deps:
                out |= self._leaves_of(dep)
            return out

        def visit(path):
            if path in seen:
                return
            seen.add(path)
            for dep in sorted(leaf_deps(path)):
                visit(dep)
            done.append(path)
        for node in sorted(self.leaves(), key=lambda n: n.path):
            visit(node.path)
        return done

    def _leaves_of(self, path: str) -> set:
        node = self.nodes.get(path)
        if node is None:
            return set()
        if not node.composite:
            return {path}
        out = set()
        for child in node.children:
            out |= self._leaves_of(child)
        return out

    def leaf_deps(self, path: str) -> set:
        out = set()
        for dep in self.nodes[path].deps:
            out |= self._leaves_of(dep)
        return out

    def levels(self) -> list[list[str]]:
        """Leaves grouped by depth: each level only depends on earlier ones."""
        depth: dict[str, int] = {}
        for path in self.order():
            depth[path] = 1 + max((depth[d] for d in self.leaf_deps(path)), default=-1)
        out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for path, d in depth.items():
            out[d].append(path)
        return [sorted(level) for level in out]


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _substitute(snippet, var: str, index: str):
    if isinstance(snippet, str):
        return snippet.replace(var, index) if var else snippet
    if isinstance(snippet, dict):
        return {_substitute(k, var, index): _substitute(v, var, index) for k, v in snippet.items()}
    if isinstance(snippet, list):
        return [_substitute(v, var, index) for v in snippet]
    return snippet
