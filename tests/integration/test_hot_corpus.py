"""Public HOT templates (PyPI source distributions pinned in hack/hot-corpus.txt, fetched and
cached by hack/hot-corpus.sh) through the Heat engine the operator runs: every template is
either accepted or refused with reasons that name where in the template the problem is, as
Heat's own messages do; none makes the engine raise. No cluster: the engine is pure, but the
corpus is fetched like the other test inputs, so this lives with the integration tests.
benchmarks/orchestration/corpus.py writes the same verdicts, with counts, to corpus.md."""

from __future__ import annotations

import pytest

from benchmarks.orchestration import corpus


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
