"""CRDs generated from the pydantic models (`stratus crds` / `make crds`).

kube-custom-resource (the library azimuth's kopf operators use) turns each model into
an OpenAPI v3 schema with refs resolved and titles removed. This module then adds what
that library leaves out and a structural schema needs:

- `Optional[X]` (an anyOf with null) becomes X with `nullable: true`;
- defaults are kept for spec (the API server fills them in, so `kubectl get -o yaml`
  shows what the operator will use) and dropped from status (the operator owns it);
- the category `stratus`, selectable fields, and the kopf peering CRD that lets only one
  operator replica be active at a time.

The output is deterministic (sorted keys), so a test can regenerate and diff.
"""

from __future__ import annotations

import copy
import importlib
import pathlib
import pkgutil
import typing as t

import yaml
from kube_custom_resource import CustomResourceRegistry

from . import registry as reg

#: Extra CRD settings per kind that the model metaclass cannot carry.
SELECTABLE_FIELDS: dict[str, list[str]] = {
    "Image": [".spec.diskFormat", ".spec.visibility", ".spec.properties.osDistro", ".spec.properties.osVersion",
              ".spec.properties.architecture", ".status.phase"],
    "Bucket": [".spec.bucketClassName", ".status.phase"],
}


#: Every Stratus object's name labels the objects made for it (a label value is at most
#: 63 characters), and some names become other names: refused by the API server itself.
NAME_RULE = {
    "rule": "self.metadata.name.size() <= 63",
    "message": "metadata.name: at most 63 characters (the name labels the objects Stratus makes for it)",
}
DNS_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ROOT_RULES: dict[str, list[dict]] = {
    "Volume": [{
        "rule": "!has(self.spec) || !has(self.spec.source) || !has(self.spec.source.volume) "
                "|| self.spec.source.volume != self.metadata.name",
        "message": "spec.source.volume: a volume cannot be cloned from itself; name another Volume",
    }],
    "Project": [{
        "rule": f"(has(self.spec) && has(self.spec.namespace)) || self.metadata.name.matches('{DNS_LABEL}')",
        "message": "metadata.name: without spec.namespace a Project's name is its namespace's name, so it must be a DNS "
                   "label (lowercase letters, digits and '-', starting and ending with a letter or digit); "
                   "or set spec.namespace",
    }],
    # The master Service is named <name>-master: a DNS-1035 label of at most 63 characters.
    "DataCluster": [{
        "rule": "self.metadata.name.size() <= 56 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        "message": "metadata.name: a DataCluster's name starts with a letter, has no dots and at most 56 characters "
                   "(its master Service is <name>-master)",
    }],
    # Each run is a DataJob named <name>-<minutes since the epoch> (8 digits).
    "DataJobSchedule": [{
        "rule": "self.metadata.name.size() <= 54",
        "message": "metadata.name: at most 54 characters (each run is a DataJob named <name>-<8 digits>)",
    }],
}


def _kind_modules() -> list[str]:
    import stratus.api as api

    skip = {"registry", "common", "crds"}
    return [f"stratus.api.{m.name}" for m in pkgutil.iter_modules(api.__path__) if m.name not in skip]


def build_registry() -> CustomResourceRegistry:
    registry = CustomResourceRegistry(reg.GROUP, [reg.CATEGORY])
    for name in _kind_modules():
        registry.discover_models(importlib.import_module(name))
    return registry


def _fix(node: t.Any, in_status: bool = False) -> t.Any:
    """Recursively make a pydantic JSON schema structural."""
    if isinstance(node, list):
        return [_fix(n, in_status) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    any_of = node.get("anyOf")
    if any_of and any(s.get("type") == "null" for s in any_of):
        rest = [s for s in any_of if s.get("type") != "null"]
        node.pop("anyOf")
        if len(rest) == 1:
            merged = dict(rest[0])
            merged.update({k: v for k, v in node.items() if k != "default" or v is not None})
            node = merged
        else:
            node["anyOf"] = rest
        node["nullable"] = True
        if node.get("default", "absent") is None:
            node.pop("default")
    if in_status:
        node.pop("default", None)
    if node.get("additionalProperties") is False:
        # Structural schemas may not combine it with properties; the API server prunes
        # unknown fields and kubectl's strict field validation reports them.
        node.pop("additionalProperties")
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {k: _fix(v, in_status) for k, v in value.items()}
        else:
            out[key] = _fix(value, in_status)
    return out


def crd_documents() -> list[dict]:
    docs = []
    for crd in build_registry():
        doc = crd.kubernetes_resource(include_defaults=True)
        for version in doc["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            props = schema.get("properties", {})
            for key in list(props):
                props[key] = _fix(props[key], in_status=(key == "status"))
            if "status" in props:
                props["status"].pop("default", None)
                schema["required"] = [r for r in schema.get("required", []) if r != "status"]
            schema["x-kubernetes-validations"] = [NAME_RULE, *ROOT_RULES.get(crd.kind, [])]
            if crd.kind in SELECTABLE_FIELDS:
                version["selectableFields"] = [{"jsonPath": p} for p in SELECTABLE_FIELDS[crd.kind]]
        doc["spec"]["names"]["shortNames"] = sorted(doc["spec"]["names"]["shortNames"])
        docs.append(doc)
    docs.append(kopf_peering_crd())
    return sorted(docs, key=lambda d: d["metadata"]["name"])


def kopf_peering_crd() -> dict:
    """kopf's cluster-wide peering resource: operator replicas see each other through it
    and only the one with the highest priority acts."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "clusterkopfpeerings.kopf.dev"},
        "spec": {
            "group": "kopf.dev",
            "scope": "Cluster",
            "names": {"kind": "ClusterKopfPeering", "plural": "clusterkopfpeerings", "singular": "clusterkopfpeering"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                            },
                        }
                    },
                }
            ],
        },
    }


def file_name(doc: dict) -> str:
    return f"{doc['metadata']['name']}.yaml"


def render(doc: dict) -> str:
    return yaml.safe_dump(copy.deepcopy(doc), sort_keys=True, width=100)


def write(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Write one file per CRD and remove files of kinds that no longer exist."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for doc in crd_documents():
        path = out_dir / file_name(doc)
        path.write_text(render(doc))
        written.append(path)
    for stale in set(out_dir.glob("*.yaml")) - set(written):
        stale.unlink()
    return written


def expected_files() -> dict[str, str]:
    return {file_name(d): render(d) for d in crd_documents()}
