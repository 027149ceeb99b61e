"""Stack: validate the template, then create, update, roll back and delete its children
in dependency order. The engine (core.heat) decides; this module reads what exists,
applies what the engine says and writes status.

Reads: the template, files and environment (inline or ConfigMaps), hidden parameters
(Secrets), the catalog for custom constraints (Flavors, KeyPairs, Images, networks),
the children (by the label stratus.dev/stack), generated secrets, Volume attachments.
Writes: children (server-side apply, owned by the Stack), Secrets for generated
material and secret outputs, Volume.spec.attachTo under its own field manager, status
and Events. The last spec that completed is kept in a ConfigMap
`<stack>-heat-last-complete`, which a failed update rolls back to.
"""

from __future__ import annotations

import base64
import datetime
import json

import kopf
from kubernetes.client.rest import ApiException

from ..api.registry import API_VERSION, GROUP, VERSION
from ..core import heat
from ..core.conditions import now, set_condition
from ..core.heat import plan as heatplan
from ..core.heat.secrets import generate_keypair, inputs_hash, random_string
from ..core.heat.types import POD_NETWORKS
from ..core.compute import owner_reference
from ..drivers import kube
from ..drivers import kubevirt as kv

PLURAL = "stacks"
RETRY = 3
STACK_MANAGER = "stratus-stack"          # the children's manifests
ATTACH_MANAGER = "stratus-stack-attach"   # Volume.spec.attachTo, owned apart from the Volume's manifest
SECRET_LABEL = "stratus.dev/stack-secret"
ADMIN_LABEL = "stratus.dev/heat-admin"
PARAMETERS_LABEL = "stratus.dev/stack-parameters"
NAMESPACED = ("servers", "volumes", "keypairs", "servergroups", "buckets")
CLUSTER = ("flavors", "volumetypes")


class InputError(Exception):
    pass


# -- reading ----------------------------------------------------------------------------
def _config_map(namespace: str, name: str) -> dict:
    cm = kube.get("v1", "configmaps", name, namespace)
    if cm is None:
        raise InputError(f"ConfigMap {name!r} does not exist in {namespace}")
    return cm.get("data") or {}


def _secret_value(namespace: str, name: str, key: str) -> str:
    """A hidden parameter's value. Only Secrets labelled stratus.dev/stack-parameters=true
    are read: members may create Stacks but not read Secrets, and a stack must not be a
    way to copy any Secret of the namespace into a server's user data."""
    secret = kube.get("v1", "secrets", name, namespace)
    if secret is None:
        raise InputError(f"Secret {name!r} does not exist in {namespace}")
    if (secret["metadata"].get("labels") or {}).get(PARAMETERS_LABEL) != "true":
        raise InputError(f"Secret {name!r} is not labelled {PARAMETERS_LABEL}=true; a project admin labels the Secrets "
                         "that stacks may read")
    data = secret.get("data") or {}
    if key not in data:
        raise InputError(f"Secret {name!r} has no key {key!r}")
    return base64.b64decode(data[key]).decode()


def inputs(spec: dict, namespace: str) -> dict:
    """template, files, environment and parameters of a Stack spec, read from wherever
    the spec points."""
    template = spec.get("template")
    if template is None:
        ref = spec["templateFrom"]["configMapKeyRef"]
        data = _config_map(namespace, ref["name"])
        if ref["key"] not in data:
            raise InputError(f"ConfigMap {ref['name']!r} has no key {ref['key']!r} (spec.templateFrom)")
        template = data[ref["key"]]
    files = {}
    for source in spec.get("filesFrom") or []:
        files.update(_config_map(namespace, source["configMap"]))
    files.update(spec.get("files") or {})
    environment = spec.get("environment")
    if spec.get("environmentFrom"):
        ref = spec["environmentFrom"]["configMapKeyRef"]
        data = _config_map(namespace, ref["name"])
        if ref["key"] not in data:
            raise InputError(f"ConfigMap {ref['name']!r} has no key {ref['key']!r} (spec.environmentFrom)")
        environment = data[ref["key"]]
    params = dict(spec.get("parameters") or {})
    for hidden in spec.get("parametersFrom") or []:
        ref = hidden["secretKeyRef"]
        params[hidden["name"]] = _secret_value(namespace, ref["name"], ref["key"])
    return {"template": template, "files": files, "environment": environment, "parameters": params}


def catalog(namespace: str) -> dict[str, set[str]]:
    """Names the custom constraints are checked against."""
    out = {"nova.flavor": {f["metadata"]["name"] for f in kv.list_custom(API_VERSION, "flavors")},
           "nova.keypair": {k["metadata"]["name"] for k in kv.list_custom(API_VERSION, "keypairs", namespace)}}
    if kv.has_resource(API_VERSION, "images"):
        out["glance.image"] = {i["metadata"]["name"] for i in kv.list_custom(API_VERSION, "images", namespace)}
    networks = set(POD_NETWORKS)
    if kv.has_resource("k8s.cni.cncf.io/v1", "network-attachment-definitions"):
        networks |= {n["metadata"]["name"] for n in kv.list_custom("k8s.cni.cncf.io/v1", "network-attachment-definitions", namespace)}
    out["neutron.network"] = networks
    return out


def load(body: dict, spec: dict | None = None, with_catalog: bool = True) -> heat.Stack:
    meta = body["metadata"]
    namespace = meta["namespace"]
    ns = kube.get_namespace(namespace) or {}
    admin = ((ns.get("metadata") or {}).get("labels") or {}).get(ADMIN_LABEL) == "true"
    src = inputs(spec if spec is not None else body["spec"], namespace)
    return heat.Stack(src["template"], name=meta["name"], namespace=namespace, stack_id=meta.get("uid", ""),
                      files=src["files"], environment=src["environment"], parameters=src["parameters"],
                      catalog=catalog(namespace) if with_catalog else None, admin=admin)


def observed(name: str, namespace: str) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    selector = f"{heat.LABEL_STACK}={name}"
    for plural in NAMESPACED:
        for obj in kv.list_custom(API_VERSION, plural, namespace, label_selector=selector):
            _add(out, obj)
    for plural in CLUSTER:
        for obj in kv.list_custom(API_VERSION, plural, label_selector=f"{selector},stratus.dev/stack-namespace={namespace}"):
            _add(out, obj)
    return out


def _add(out: dict, obj: dict) -> None:
    path = (obj["metadata"].get("annotations") or {}).get(heat.ANNOTATION_RESOURCE)
    if path:
        out.setdefault(path, {})[f"{obj['kind']}/{obj['metadata']['name']}"] = obj


def generated(name: str, namespace: str) -> dict[str, dict]:
    out = {}
    for secret in kube.core().list_namespaced_secret(namespace, label_selector=f"{SECRET_LABEL}={name}").items:
        path = (secret.metadata.annotations or {}).get(heat.ANNOTATION_RESOURCE)
        if path:
            data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
            data["hash"] = (secret.metadata.annotations or {}).get("stratus.dev/inputs", "")
            out[path] = data
    return out


def volumes(namespace: str) -> dict[str, tuple[str, str]]:
    """Volume name -> (spec.attachTo, the server status reports it attached to)."""
    return {v["metadata"]["name"]: ((v.get("spec") or {}).get("attachTo") or "",
                                    ((v.get("status") or {}).get("attachment") or {}).get("server", ""))
            for v in kv.list_custom(API_VERSION, "volumes", namespace)}


# -- writing ----------------------------------------------------------------------------
def _owned(body: dict, obj: dict) -> dict:
    if obj["kind"] not in heat.CLUSTER_KINDS:
        obj["metadata"]["ownerReferences"] = [owner_reference(body)]
    return obj


def _plural(kind: str) -> str:
    return heat.PLURALS[kind]


def _delete(kind: str, name: str, namespace: str) -> None:
    if kind == "Secret":
        kube.delete("v1", "secrets", name, namespace)
        return
    kube.delete(API_VERSION, _plural(kind), name, None if kind in heat.CLUSTER_KINDS else namespace)


def _set_attach(volume: str, server: str | None, namespace: str) -> None:
    """Own (or give up) Volume.spec.attachTo under the attachment field manager. A Volume
    that is gone is left alone (an apply would create it)."""
    if kube.get(API_VERSION, "volumes", volume, namespace) is None:
        return
    spec = {"attachTo": server} if server else {}
    try:
        kube.apply({"apiVersion": API_VERSION, "kind": "Volume", "metadata": {"name": volume, "namespace": namespace},
                    "spec": spec}, "volumes", manager=ATTACH_MANAGER)
    except ApiException as exc:
        if exc.status != 422:
            raise


def _store_secret(body: dict, stack: heat.Stack, path: str, kind: str, digest: str) -> None:
    meta = body["metadata"]
    data = {"value": random_string(_props(stack, path))} if kind == "random" else generate_keypair()
    name = f"{heat.object_name(meta['name'], path)}-secret"
    kube.apply_core({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                     "metadata": {"name": name, "namespace": meta["namespace"], "ownerReferences": [owner_reference(body)],
                                  "labels": {SECRET_LABEL: meta["name"]},
                                  "annotations": {heat.ANNOTATION_RESOURCE: path, "stratus.dev/inputs": digest}},
                     "stringData": data})


def _props(stack: heat.Stack, path: str) -> dict:
    node = stack.nodes[path]
    return node.scope.evaluator(deps=set()).evaluate(node.snippet.get("properties") or {}, node.where) or {}


def _save_last_complete(body: dict, spec: dict) -> None:
    """Keep what completed as a self-contained spec (the template, files and environment
    as read, not where they were read from), so a rollback does not depend on ConfigMaps
    that may have changed since. Hidden parameters stay Secret references."""
    meta = body["metadata"]
    src = inputs(spec, meta["namespace"])
    snapshot = {"template": src["template"], "files": src["files"], "parameters": spec.get("parameters") or {},
                "parametersFrom": spec.get("parametersFrom") or []}
    if src["environment"]:
        snapshot["environment"] = src["environment"]
    kube.apply_core({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": f"{meta['name']}-heat-last-complete", "namespace": meta["namespace"],
                                  "ownerReferences": [owner_reference(body)]},
                     "data": {"spec.json": json.dumps(kube.plain(snapshot), sort_keys=True)}})


def _last_complete(body: dict) -> dict | None:
    meta = body["metadata"]
    cm = kube.get("v1", "configmaps", f"{meta['name']}-heat-last-complete", meta["namespace"])
    if cm is None:
        return None
    data = cm.get("data") or {}
    return json.loads(data["spec.json"]) if "spec.json" in data else None


def _write(body: dict, phase: str, reason: str, message: str, **fields) -> None:
    meta = body["metadata"]
    old = body.get("status") or {}
    generation = meta.get("generation", 0)
    ready = phase.endswith("_COMPLETE") and not phase.startswith(("ROLLBACK", "DELETE"))
    status = {"phase": phase, "stackStatusReason": message[:4000], "observedGeneration": generation,
              "conditions": set_condition(old.get("conditions"), "Ready", ready, reason, message[:4000], generation),
              **fields}
    changed = {k: v for k, v in status.items() if old.get(k) != v}
    if changed:
        kube.patch_status(API_VERSION, PLURAL, meta["name"], changed, meta["namespace"])
    if old.get("phase") != phase:
        kopf.event(body, type="Warning" if phase.endswith("FAILED") else "Normal", reason=reason,
                   message=f"{old.get('phase') or 'new'} -> {phase}: {message[:900]}")


RESOURCE_STATE = {heat.INIT: "INIT_COMPLETE", heat.IN_PROGRESS: "IN_PROGRESS", heat.COMPLETE: "COMPLETE", heat.FAILED: "FAILED"}


def _resources(body, stack: heat.Stack, step: heatplan.Step, action: str, obs: dict) -> list[dict]:
    old = {r["name"]: r for r in (body.get("status") or {}).get("resources") or []}
    rows = []
    for path in stack.order():
        state, message = step.states.get(path, (heat.INIT, ""))
        label = RESOURCE_STATE[state] if state == heat.INIT else f"{action}_{RESOURCE_STATE[state]}"
        before = old.get(path, {}).get("state", "")
        if state == heat.COMPLETE and action == "UPDATE" and before in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
            label = before  # untouched by this update: keeps the state it had
        row = {"name": path, "type": stack.nodes[path].type, "state": label, "reason": _scrub(message, step.sensitive)[:1000],
               "objects": sorted(obs.get(path) or {})}
        if old.get(path, {}).get("state") != label:
            kopf.event(body, type="Warning" if state == heat.FAILED else "Normal", reason="Resource" + label.title().replace("_", ""),
                       message=f"{path} ({row['type']}): {label}" + (f": {row['reason']}" if row["reason"] else ""))
        rows.append(row)
    return rows


def _scrub(text: str, sensitive: list[str]) -> str:
    for value in sensitive:
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _outputs(body: dict, step: heatplan.Step) -> tuple[list[dict], str]:
    meta = body["metadata"]
    rows, secret_data = [], {}
    for name, value in (step.outputs or {}).items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if any(s and len(s) >= 4 and s in text for s in step.sensitive):
            rows.append({"name": name, "value": "", "secret": True})
            secret_data[name] = text
        else:
            rows.append({"name": name, "value": text[:16384]})
    for name, error in step.output_errors.items():
        rows.append({"name": name, "value": "", "error": _scrub(error, step.sensitive)[:1000]})
    secret_name = ""
    if secret_data:
        secret_name = f"{meta['name']}-outputs"
        kube.apply_core({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                         "metadata": {"name": secret_name, "namespace": meta["namespace"],
                                      "ownerReferences": [owner_reference(body)]},
                         "stringData": secret_data})
    return sorted(rows, key=lambda r: r["name"]), secret_name


def _api_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body).get("message", "")[:500]
    except (TypeError, ValueError):
        return str(exc.reason)


def _elapsed(status: dict) -> float:
    started = status.get("startedAt")
    if not started:
        return 0.0
    t0 = datetime.datetime.fromisoformat(started.replace("Z", "+00:00"))
    return (datetime.datetime.now(datetime.timezone.utc) - t0).total_seconds()


# -- handlers ---------------------------------------------------------------------------
@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def reconcile(body, **_) -> None:
    body = kube.plain(body)
    meta, status = body["metadata"], body.get("status") or {}
    namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation", 0)
    if status.get("observedGeneration") == generation and status.get("phase", "").endswith(("_FAILED", "ROLLBACK_COMPLETE")):
        return  # settled: nothing to do until the spec changes
    new_action = status.get("observedGeneration") != generation or not status.get("action")
    rolling_back = status.get("action") == "ROLLBACK" and status.get("rollbackGeneration") == generation
    if rolling_back:
        action = "ROLLBACK"
    elif new_action:
        action = "UPDATE" if status.get("completeGeneration") else "CREATE"
    else:
        action = status.get("action")
    fields = {"action": action, "startedAt": status.get("startedAt") if not new_action else now()}
    if new_action:
        status = {**status, "startedAt": fields["startedAt"]}
    spec = body["spec"]
    if action == "ROLLBACK":
        spec = _last_complete(body)
        if spec is None:  # a failed create: roll back to nothing (Retain honoured, as in a delete)
            return _rollback_to_nothing(body, fields)
    try:
        stack = load(body, spec)
    except InputError as exc:
        return _write(body, f"{action}_FAILED", "InputNotFound", f"{exc}; fix it and the stack retries", **fields)
    if not stack.ok:
        message = "; ".join(str(e) for e in stack.errors[:20])
        return _write(body, f"{action}_FAILED", "ValidationFailed", _scrub(message, stack.hidden_values), **fields,
                      resources=[], warnings=[])
    obs = observed(name, namespace)
    vols = volumes(namespace)
    made = generated(name, namespace)
    step = heatplan.step(stack, obs, made, {v: st for v, (_, st) in vols.items()})
    for path in sorted(set(made) - set(stack.nodes)):  # a RandomString or KeyPair that left the template
        _delete("Secret", f"{heat.object_name(name, path)}-secret", namespace)
    for path, kind, digest in step.secrets:
        _store_secret(body, stack, path, kind, digest)
    for kind, obj_name in step.replace:
        _delete(kind, obj_name, namespace)
    refused = []  # what the API server refuses (a schema or CEL rule: a volume that would shrink) fails the resource
    for obj in step.apply:
        try:
            kube.apply(_owned(body, obj), _plural(obj["kind"]), manager=STACK_MANAGER)
        except ApiException as exc:
            if exc.status not in (400, 403, 409, 422):
                raise
            path = obj["metadata"]["annotations"][heat.ANNOTATION_RESOURCE]
            refused.append(f"{path}: the API server refused {obj['kind']} {obj['metadata']['name']}: "
                           f"{_api_message(exc)}")
    wanted = {(v, srv, p) for v, srv, p in step.attach}
    built = {p for _, _, p in wanted}
    # An attachment whose resource is still in the stack but waits this pass is kept as
    # it is; one whose resource left, or now attaches something else, is undone.
    for a in status.get("attachments") or []:
        path = a.get("resource", "")
        if path in stack.nodes and path not in built:
            wanted.add((a["volume"], a["server"], path))
    for a in status.get("attachments") or []:
        if a["volume"] not in {v for v, _, _ in wanted}:
            _set_attach(a["volume"], None, namespace)
    for volume, server, _ in sorted(wanted):
        if vols.get(volume, ("", ""))[0] != server:
            _set_attach(volume, server, namespace)
    for kind, obj_name, _path in step.delete:
        _delete(kind, obj_name, namespace)
    fields["attachments"] = [{"volume": v, "server": srv, "resource": p} for v, srv, p in sorted(wanted)]
    fields["resources"] = _resources(body, stack, step, action, obs)
    fields["warnings"] = stack.warnings[:50]
    timeout = int(body["spec"].get("timeoutMinutes", 60)) * 60
    failed = step.failed + refused or ([f"not complete after {timeout // 60} minutes"] if _elapsed(status) > timeout else [])
    if failed:
        message = _scrub("; ".join(failed[:10]), step.sensitive)
        if body["spec"].get("rollback", True) and action != "ROLLBACK":
            fields.update(action="ROLLBACK", rollbackGeneration=generation, startedAt=now())
            _write(body, "ROLLBACK_IN_PROGRESS", "RollingBack", f"{action} failed ({message}); rolling back", **fields)
            raise kopf.TemporaryError("rolling back", delay=1)
        return _write(body, f"{action}_FAILED", "ResourceFailed", message, **fields)
    if step.complete and step.outputs is not None:
        fields["outputs"], fields["outputsSecret"] = _outputs(body, step)
        if action == "ROLLBACK":
            return _write(body, "ROLLBACK_COMPLETE", "RolledBack", "rolled back to the last template that completed", **fields)
        _save_last_complete(body, spec)
        fields["completeGeneration"] = generation
        return _write(body, f"{action}_COMPLETE", "Complete", f"{len(step.states)} resource(s) complete", **fields)
    busy = [f"{p}: {m}" for p, (s, m) in step.states.items() if s != heat.COMPLETE]
    _write(body, f"{action}_IN_PROGRESS", "InProgress", _scrub("; ".join(busy[:5]), step.sensitive), **fields)
    raise kopf.TemporaryError("stack in progress", delay=RETRY)


def _rollback_to_nothing(body: dict, fields: dict) -> None:
    meta = body["metadata"]
    try:
        stack = load(body, with_catalog=False)
    except InputError:
        stack = None
    gone = _delete_pass(body, stack if stack is not None and stack.ok else None)
    if not gone:
        _write(body, "ROLLBACK_IN_PROGRESS", "RollingBack", "deleting what the failed create made", **fields)
        raise kopf.TemporaryError("rolling back", delay=RETRY)
    for secret in kube.core().list_namespaced_secret(meta["namespace"], label_selector=f"{SECRET_LABEL}={meta['name']}").items:
        _delete("Secret", secret.metadata.name, meta["namespace"])
    _write(body, "ROLLBACK_COMPLETE", "RolledBack", "the create failed and what it made is deleted", **fields,
           resources=[], attachments=[], outputs=[])


def _delete_pass(body: dict, stack: heat.Stack | None) -> bool:
    """One step of deletion in reverse dependency order; True when nothing is left."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    for a in (body.get("status") or {}).get("attachments") or []:
        _set_attach(a["volume"], None, namespace)
    obs = observed(name, namespace)
    now_paths, retain = heatplan.deletion(stack, obs)
    for path in retain:
        for key, obj in obs[path].items():
            kind, obj_name = key.split("/", 1)
            patch = {"metadata": {"ownerReferences": None, "labels": {heat.LABEL_STACK: None, heat.LABEL_RESOURCE: None},
                                  "annotations": {heat.ANNOTATION_RESOURCE: None, "stratus.dev/retained-from-stack": name}}}
            if kind in heat.CLUSTER_KINDS:
                kube.custom().patch_cluster_custom_object(GROUP, VERSION, _plural(kind), obj_name, patch)
            else:
                kube.custom().patch_namespaced_custom_object(GROUP, VERSION, namespace, _plural(kind), obj_name, patch)
    # Attachments first: a volume is detached before it or its server goes.
    for path in now_paths:
        for key in obs[path]:
            kind, obj_name = key.split("/", 1)
            _delete(kind, obj_name, namespace)
    return not [p for p in obs if p not in retain]


@kopf.on.delete(GROUP, VERSION, PLURAL)
def delete(body, **_) -> None:
    body = kube.plain(body)
    try:
        stack = load(body, with_catalog=False)
    except (InputError, ApiException):
        stack = None
    if not _delete_pass(body, stack if stack is not None and stack.ok else None):
        _write(body, "DELETE_IN_PROGRESS", "Deleting", "deleting resources in reverse dependency order", action="DELETE")
        raise kopf.TemporaryError("deleting", delay=RETRY)
    meta = body["metadata"]
    for secret in kube.core().list_namespaced_secret(meta["namespace"], label_selector=f"{SECRET_LABEL}={meta['name']}").items:
        _delete("Secret", secret.metadata.name, meta["namespace"])
