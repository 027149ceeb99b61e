"""The generated CRDs: no drift from the models, and the conventions every kind follows."""

from __future__ import annotations

import pathlib

import pytest

from stratus.api import crds

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCS = [d for d in crds.crd_documents() if d["spec"]["group"] == "stratus.dev"]

#: Short names and plurals of kinds Stratus must not shadow in kubectl's resolution:
#: core, CSI snapshots, KubeVirt, CDI and Metal3.
TAKEN = {
    "po", "pod", "pods", "svc", "service", "ns", "no", "node", "nodes", "secret", "event", "ev", "pv", "pvc", "cm", "sa", "ep", "ds", "deploy", "rs", "sts", "ing", "netpol", "pdb",
    "sc", "vs", "vsc", "vsclass", "volumesnapshot", "volumesnapshots", "volumesnapshotcontent",
    "vm", "vms", "vmi", "vmis", "vmim", "vmims", "vmpool", "vmsnapshot", "vmrestore", "vmexport", "vmclone",
    "dv", "dvs", "datasource", "dataimportcron", "cdi", "storageprofile",
    "bmh", "baremetalhost", "baremetalhosts", "hfs", "hardwaredata", "ppimg", "preprovisioningimage",
}


@pytest.mark.parametrize("out_dir", ["crds", "charts/stratus/crds"])
def test_generated_crds_match_the_models(out_dir):
    expected = crds.expected_files()
    actual = {p.name: p.read_text() for p in (REPO / out_dir).glob("*.yaml")}
    assert sorted(actual) == sorted(expected), f"{out_dir}: run `make crds`"
    for name, text in expected.items():
        assert actual[name] == text, f"{out_dir}/{name} drifted from the models: run `make crds` and commit"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d["spec"]["names"]["kind"])
def test_every_kind_follows_the_conventions(doc):
    names = doc["spec"]["names"]
    assert names["categories"] == ["stratus"]
    assert names["shortNames"], "every kind needs a short name"
    assert not (set(names["shortNames"]) | {names["plural"], names["singular"]}) & TAKEN
    (version,) = doc["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert "Age" in columns and ("Ready" in columns or "Phase" in columns)
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"observedGeneration", "conditions", "phase"} <= set(status)
    assert status["conditions"]["x-kubernetes-list-type"] == "map"


def test_short_names_are_unique_across_kinds():
    seen: dict[str, str] = {}
    for doc in DOCS:
        for short in doc["spec"]["names"]["shortNames"]:
            assert short not in seen, f"{short} used by {seen.get(short)} and {doc['spec']['names']['kind']}"
            seen[short] = doc["spec"]["names"]["kind"]


def _walk(node, path="schema"):
    if isinstance(node, dict):
        assert "anyOf" not in node or all("type" not in s for s in node["anyOf"]), f"non-structural anyOf at {path}"
        assert node.get("additionalProperties") is not False, f"additionalProperties: false at {path}"
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")
    yield path


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d["spec"]["names"]["kind"])
def test_schemas_are_structural(doc):
    list(_walk(doc["spec"]["versions"][0]["schema"]))
