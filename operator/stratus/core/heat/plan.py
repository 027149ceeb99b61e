"""The pure step of a stack's reconcile: given the validated Stack and what exists
(children by resource path, generated secrets, volume attachments), say what to do next.

    step(stack, observed, secrets, attached) -> Step
        states      every leaf resource: INIT | IN_PROGRESS | COMPLETE | FAILED, with why
        apply       manifests to server-side apply now (their dependencies are COMPLETE)
        replace     objects to delete first, because a field that cannot change did
        attach      (volume, server) pairs wanted; detaching is the caller's diff
        delete      objects of resources that left the stack (an update or a condition)
        secrets     material to generate (RandomString values, KeyPair keys)
        outputs     the outputs, once every resource is COMPLETE

    deletion(stack, observed) -> (delete now, retain)   reverse dependency order

Everything is recomputed from the template each time (level-based): an operator restart
or a second run lands on the same answer.
"""

from __future__ import annotations

import dataclasses

from .errors import HeatError
from .functions import Pending, _select
from .secrets import inputs_hash
from .stack import ANNOTATION_RESOURCE, GROUP_TYPE, LABEL_RESOURCE, LABEL_STACK, Node, Stack, label_value
from .types import CLUSTER_KINDS, Observed, object_state

INIT, IN_PROGRESS, COMPLETE, FAILED = "INIT", "IN_PROGRESS", "COMPLETE", "FAILED"


@dataclasses.dataclass
class Step:
    states: dict = dataclasses.field(default_factory=dict)      # path -> (state, message)
    apply: list = dataclasses.field(default_factory=list)       # manifests
    replace: list = dataclasses.field(default_factory=list)     # (kind, name)
    attach: list = dataclasses.field(default_factory=list)      # (volume, server, path)
    delete: list = dataclasses.field(default_factory=list)      # (kind, name, path)
    secrets: list = dataclasses.field(default_factory=list)     # (path, kind, hash)
    outputs: dict | None = None                                 # name -> value
    output_errors: dict = dataclasses.field(default_factory=dict)
    sensitive: list = dataclasses.field(default_factory=list)   # strings never to show

    @property
    def complete(self) -> bool:
        return all(s == COMPLETE for s, _ in self.states.values())

    @property
    def failed(self) -> list[str]:
        return [f"{p}: {m}" for p, (s, m) in self.states.items() if s == FAILED]


def decorate(stack: Stack, node: Node, body: dict) -> dict:
    meta = body.setdefault("metadata", {})
    if body["kind"] not in CLUSTER_KINDS:
        meta["namespace"] = stack.namespace
    meta.setdefault("labels", {}).update({LABEL_STACK: stack.name, LABEL_RESOURCE: label_value(node.path),
                                          "stratus.dev/stack-namespace": stack.namespace})
    meta.setdefault("annotations", {})[ANNOTATION_RESOURCE] = node.path
    return body


def _contains(want, have) -> bool:
    """Whether ``have`` already holds everything ``want`` sets (the API server adds defaults)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(_contains(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(_contains(w, h) for w, h in zip(want, have))
    return want == have


class _Runtime:
    def __init__(self, stack: Stack, states: dict, observed: dict):
        self.stack, self.states, self.observed = stack, states, observed

    def lookup(self, scope):
        runtime = self

        class Lookup:
            def reference(self, name):
                return runtime.reference(scope.nodes[name])

            def attribute(self, name, attr, rest):
                return runtime.attribute(scope.nodes[name], attr, rest)
        return Lookup()

    def _leaf(self, node: Node) -> Observed:
        if self.states.get(node.path, (INIT,))[0] != COMPLETE:
            raise Pending(node.path)
        return self.observed[node.path]

    def reference(self, node: Node):
        if node.composite == "nested":
            outputs = node.nested.template.get("outputs") or {}
            if "OS::stack_id" in outputs:
                return self.output(node.nested, "OS::stack_id")
            for child in node.children:
                self._require(child)
            return f"{self.stack.name}-{node.path}"
        if node.composite == "group":
            return node.path
        return node.rtype.reference(self._leaf(node))

    def _require(self, path):
        node = self.stack.nodes[path]
        if node.composite:
            for child in node.children:
                self._require(child)
        else:
            self._leaf(node)

    def output(self, scope, name, rest=()):
        out = (scope.template.get("outputs") or {})[name]
        value = scope.evaluator(lookup=self.lookup(scope), deps=set()).evaluate(out["value"], f"outputs.{name}")
        return _select(value, list(rest), f"outputs.{name}")

    def attribute(self, node: Node, attr, rest):
        if node.composite == "nested":
            if attr is None:
                return {k: self.output(node.nested, k) for k in node.nested.template.get("outputs") or {}}
            if attr.startswith("resource."):
                _, child, *more = attr.split(".", 2)
                inner = node.nested.nodes[child]
                return self.attribute(inner, more[0], rest) if more else _select(self.reference(inner), list(rest), attr)
            return self.output(node.nested, attr, rest)
        if node.composite == "group":
            members = [self.stack.nodes[c] for c in node.children]
            if attr == "refs":
                return _select([self.reference(m) for m in members], list(rest), attr)
            if attr == "refs_map":
                return _select({m.index: self.reference(m) for m in members}, list(rest), attr)
            if attr == "removed_rsrc_list":
                return list(getattr(node, "removed", []))
            if attr == "attributes":
                if not rest:
                    raise HeatError(node.where, "get_attr [group, attributes, name] needs an attribute name")
                return {m.index: self.attribute(m, rest[0], rest[1:]) for m in members}
            if attr and attr.startswith("resource."):
                _, idx, *more = attr.split(".", 2)
                member = self.stack.nodes.get(f"{node.path}.{idx}")
                if member is None:
                    raise HeatError(node.where, f"the group has no member {idx}")
                return self.attribute(member, more[0], rest) if more else _select(self.reference(member), list(rest), attr)
            return [self.attribute(m, attr, rest) for m in members]
        obs = self._leaf(node)
        if attr is None:
            return {a: node.rtype.attribute(obs, a) for a in sorted(node.rtype.attributes)}
        return _select(node.rtype.attribute(obs, attr), list(rest), attr)


def step(stack: Stack, observed: dict[str, dict[str, dict]], secrets: dict[str, dict] | None = None,
         attached: dict[str, str] | None = None) -> Step:
    """One pass; ``observed[path]`` maps "Kind/name" to the child as it is, ``secrets[path]``
    holds generated material (with its ``hash``), ``attached[volume]`` the server a Volume
    reports it is attached to."""
    stack.validate()
    secrets, attached = secrets or {}, attached or {}
    out = Step()
    states: dict = {}
    views: dict[str, Observed] = {}
    runtime = _Runtime(stack, states, views)
    for scope in _scopes(stack):
        scope.lookup = runtime.lookup(scope)
    wanted: dict[str, set] = {}
    configs: dict[str, str] = {}
    try:
        for path in stack.order():
            node = stack.nodes[path]
            have = observed.get(path) or {}
            waiting = sorted(d for d in stack.leaf_deps(path) if states.get(d, (INIT,))[0] != COMPLETE)
            if waiting:
                failed = [d for d in waiting if states.get(d, (INIT,))[0] == FAILED]
                states[path] = (INIT if not have else IN_PROGRESS,
                                f"waiting for {', '.join(waiting[:3])}" + (" (failed)" if failed else ""))
                wanted[path] = set(have)
                continue
            try:
                props = node.scope.evaluator().evaluate(node.snippet.get("properties") or {}, f"{node.where}.properties")
            except Pending as p:
                states[path] = (INIT, f"waiting for {p.resource}")
                wanted[path] = set(have)
                continue
            except HeatError as exc:
                states[path] = (FAILED, str(exc))
                wanted[path] = set(have)
                continue
            rt = node.rtype
            secret = {}
            if rt.secret == "random" or (rt.secret == "keypair" and not props.get("public_key")):
                digest = inputs_hash(props) if rt.secret == "random" else "generated"
                secret = secrets.get(path) or {}
                if secret.get("hash") != digest:
                    out.secrets.append((path, rt.secret, digest))
                    states[path] = (IN_PROGRESS, "generating its secret")
                    wanted[path] = set(have)
                    continue
                out.sensitive += [v for k, v in secret.items() if k in ("value", "private_key") and v]
            try:
                build = rt.build(stack._ctx(node, secret, configs), props)
            except HeatError as exc:
                states[path] = (FAILED, f"{node.where}.{exc.path}: {exc.message}")
                wanted[path] = set(have)
                continue
            if build.config is not None:
                configs[stack.object_name(node)] = build.config
            objs = {f"{o['kind']}/{o['metadata']['name']}": decorate(stack, node, o) for o in build.objects}
            wanted[path] = set(objs)
            state, message = COMPLETE, ""
            for key, body in objs.items():
                current = have.get(key)
                if current is not None and rt.main_kind == body["kind"] and any(
                        (current.get("spec") or {}).get(f) != (body.get("spec") or {}).get(f) for f in rt.replace_on):
                    out.replace.append((body["kind"], body["metadata"]["name"]))
                    state, message = IN_PROGRESS, f"replacing {key}"
                    continue
                if current is None or not _contains(body.get("spec"), current.get("spec")) or \
                        not _contains(body["metadata"].get("annotations") or {}, current["metadata"].get("annotations") or {}):
                    out.apply.append(body)
                    state, message = IN_PROGRESS, f"{'creating' if current is None else 'updating'} {key}"
                    continue
                s, m = object_state(current)
                if s == FAILED:
                    state, message = FAILED, m
                elif s != COMPLETE and state == COMPLETE:
                    state, message = IN_PROGRESS, m
            for volume, server in build.attach:
                out.attach.append((volume, server, path))
                if attached.get(volume) != server and state == COMPLETE:
                    state, message = IN_PROGRESS, f"attaching {volume} to {server}"
            states[path] = (state, message)
            views[path] = Observed(stack.object_name(node), props, {k.split("/")[0]: v for k, v in have.items()},
                                   secret, build.config)
        for path, have in observed.items():
            for key in sorted(set(have) - wanted.get(path, set())):
                kind, name = key.split("/", 1)
                out.delete.append((kind, name, path))
        out.states = states
        if out.complete and not out.apply and not out.replace:
            out.outputs = {}
            for name, spec in (stack.root.template.get("outputs") or {}).items():
                cond = spec.get("condition")
                if cond is not None and not stack.root.condition(cond, f"outputs.{name}.condition"):
                    continue
                try:
                    out.outputs[name] = runtime.output(stack.root, name)
                except (HeatError, Pending) as exc:
                    out.output_errors[name] = str(exc)
    finally:
        for scope in _scopes(stack):
            scope.lookup = None
    out.states = states
    out.sensitive += stack.hidden_values
    return out


def _scopes(stack: Stack):
    seen = [stack.root]
    for node in stack.nodes.values():
        if node.nested is not None and node.nested not in seen:
            seen.append(node.nested)
    return seen


def deletion(stack: Stack | None, observed: dict[str, dict]) -> tuple[list[str], list[str]]:
    """Paths whose objects to delete now (nothing that still exists depends on them) and
    paths to retain (deletion_policy Retain: released, not deleted)."""
    present = {p for p, objs in observed.items() if objs}
    if stack is None or not stack.ok:
        return sorted(present), []
    retain = sorted(p for p in present if p in stack.nodes and stack.nodes[p].deletion_policy == "Retain")
    now = []
    for path in sorted(present):
        if path in retain:
            continue
        dependents = [q for q in present if q != path and q in stack.nodes and path in stack.leaf_deps(q)
                      and q not in retain]
        if not dependents:
            now.append(path)
    return now, retain


def preview(stack: Stack, observed: dict[str, dict[str, dict]]) -> list[dict]:
    """What an update (or a create) would do per resource: Add, Update, Replace, Delete,
    Unchanged (a dry run: every property known before creation, placeholders otherwise)."""
    rows = []
    for path in stack.order():
        node = stack.nodes[path]
        have = observed.get(path) or {}
        try:
            props = node.scope.evaluator(deps=set()).evaluate(node.snippet.get("properties") or {}, node.where)
            build = node.rtype.build(stack._ctx(node, {"public_key": "(generated)"}, dry_run=True), props)
        except HeatError as exc:
            rows.append({"resource": path, "type": node.type, "action": "Invalid", "detail": str(exc)})
            continue
        if not build.objects:
            rows.append({"resource": path, "type": node.type, "action": "Unchanged" if observed else "Add", "objects": []})
            continue
        action = "Add" if not have else "Unchanged"
        for body in build.objects:
            key = f"{body['kind']}/{body['metadata']['name']}"
            current = have.get(key)
            if current is None:
                action = "Add" if not have else "Update"
            elif node.rtype.main_kind == body["kind"] and any(
                    str((current.get("spec") or {}).get(f)) != str((body.get("spec") or {}).get(f)) for f in node.rtype.replace_on
                    if "<" not in str((body.get("spec") or {}).get(f))):
                action = "Replace"
            elif action == "Unchanged" and not _contains(_known(body.get("spec")), current.get("spec")):
                action = "Update"
        rows.append({"resource": path, "type": node.type, "action": action,
                     "objects": [f"{b['kind']}/{b['metadata']['name']}" for b in build.objects]})
    for path in sorted(set(observed) - set(stack.nodes)):
        if observed[path]:
            rows.append({"resource": path, "type": "", "action": "Delete", "objects": sorted(observed[path])})
    return rows


def _known(value):
    from .functions import Placeholder
    if isinstance(value, dict):
        return {k: _known(v) for k, v in value.items() if not isinstance(v, Placeholder)}
    return value
