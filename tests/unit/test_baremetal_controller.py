"""The BareMetalNode controller's pure helpers: spec and annotations to the machine's
Desired, the machine's Status to the object's status (the consolidation contract), and
conditions per state. The state machine itself is tested in test_baremetal_state_machine."""

from __future__ import annotations

import pytest

from stratus.api import baremetalnode as api
from stratus.core import baremetal_status as ctl
from stratus.loops import baremetal_node as loop
from stratus.core import baremetal as bm


def body(annotations: dict | None = None, deleting: bool = False, **spec) -> dict:
    obj = api.sample(**spec)
    obj["metadata"].update(uid="u1", generation=3, annotations=annotations or {})
    if deleting:
        obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return obj


def desired(b: dict) -> bm.Desired:
    return ctl.desired_of(b, api.BareMetalNode.model_validate(b))


@pytest.mark.parametrize(
    "annotations, spec, check",
    [
        ({}, {}, lambda d: not d.online and d.image is None and not d.detached and not d.paused and d.reboot is None),
        ({}, {"online": True}, lambda d: d.online),
        ({api.DETACHED_ANNOTATION: ""}, {}, lambda d: d.detached),
        ({api.PAUSED_ANNOTATION: ""}, {}, lambda d: d.paused),
        ({api.REBOOT_ANNOTATION: ""}, {}, lambda d: d.reboot == bm.Request("hard", "hard")),
        ({api.REBOOT_ANNOTATION: "soft"}, {}, lambda d: d.reboot.mode == "soft"),
        ({api.REINSPECT_ANNOTATION: ""}, {}, lambda d: d.reinspect is not None),
        ({}, {"image": {"url": "http://x/d.img", "checksum": "ab"}}, lambda d: d.image == "http://x/d.img#sha256:ab"),
        ({}, {"image": {"name": "ubuntu", "namespace": "imgs"}}, lambda d: d.image == "image:imgs/ubuntu"),
        ({}, {"consumerRef": {"apiVersion": "v1", "kind": "Pod", "name": "p", "namespace": "n"}},
         lambda d: d.consumer == "Pod/n/p"),
        ({}, {"inspect": False}, lambda d: not d.inspect),
    ],
    ids=["defaults", "online", "detached", "paused", "reboot-hard", "reboot-soft", "reinspect", "image-url", "image-ref",
         "consumer", "no-inspect"],
)
def test_desired_from_spec_and_annotations(annotations, spec, check):
    assert check(desired(body(annotations, **spec)))


def test_deleting_is_desired():
    assert desired(body(deleting=True)).deleting


def cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def status_for(machine: bm.Status, power=None, problem=None, node_name=None) -> dict:
    return ctl.status_of(body(), machine, power=power, power_checked="2026-01-01T00:00:00Z" if power else None,
                         config_problem=problem, node_name=node_name)


ERR = bm.ErrorInfo(bm.State.REGISTRATION_ERROR, "AuthenticationFailed", "the BMC refused the password", "t")


@pytest.mark.parametrize(
    "machine, power, expect",
    [
        (bm.Status(state=bm.State.REGISTERING), None,
         {"phase": "Registering", "Ready": ("False", "Registering"), "Registered": ("Unknown", "Registering")}),
        (bm.Status(state=bm.State.REGISTRATION_ERROR, error=ERR, error_count=2), None,
         {"phase": "Error", "Ready": ("False", "AuthenticationFailed"), "Registered": ("False", "AuthenticationFailed")}),
        (bm.Status(state=bm.State.AVAILABLE, registered=True, hardware={"serialNumber": "S"}), bm.Power.OFF,
         {"phase": "Available", "Ready": ("True", "Available"), "Registered": ("True", "BMCReachable"),
          "Inspected": ("True", "Inspected"), "Provisioned": ("False", "NotProvisioned"), "poweredOn": False}),
        (bm.Status(state=bm.State.PROVISIONED, registered=True, image="http://x#sha256:ab", attempt=1), bm.Power.ON,
         {"phase": "Provisioned", "Ready": ("True", "Provisioned"), "Provisioned": ("True", "Provisioned"), "poweredOn": True}),
        (bm.Status(state=bm.State.POWER_MANAGEMENT_ERROR, registered=True,
                   error=bm.ErrorInfo(bm.State.POWER_MANAGEMENT_ERROR, "BMCUnreachable", "no answer", "t"), error_count=1), None,
         {"phase": "Error", "Ready": ("False", "BMCUnreachable"), "Registered": ("True", "BMCReachable")}),
        (bm.Status(state=bm.State.PROVISIONING, registered=True, image="http://x#sha256:ab", attempt=2), bm.Power.ON,
         {"phase": "Provisioning", "Provisioned": ("False", "Provisioning"), "Ready": ("False", "Provisioning"), "poweredOn": True}),
    ],
    ids=["registering", "auth-failed", "available-off", "provisioned-on", "bmc-unreachable", "provisioning"],
)
def test_status_and_conditions(machine, power, expect):
    st = status_for(machine, power)
    assert st["phase"] == expect["phase"]
    assert st["provisioningState"] == machine.state.value
    assert st["observedGeneration"] == 3
    for type_, (status, reason) in ((k, v) for k, v in expect.items() if k[0].isupper()):
        c = cond(st, type_)
        assert (c["status"], c["reason"]) == (status, reason), type_
    if "poweredOn" in expect:
        assert st["poweredOn"] is expect["poweredOn"]
        assert st["powerState"] == ("On" if expect["poweredOn"] else "Off")
    else:
        assert "poweredOn" not in st  # unknown power is not reported as off


def test_status_keeps_history_and_provisioning_apart_from_the_machine_memory():
    entry = bm.HistoryEntry("2026-01-01T00:00:00Z", bm.State.REGISTERING, bm.State.INSPECTING, "registered", "ok")
    st = status_for(bm.Status(state=bm.State.PROVISIONING, image="http://x/d.img#sha256:ab", attempt=1, history=(entry,)))
    assert st["operationHistory"] == [entry.to_dict()]
    assert st["provisioning"] == {"imageUrl": "http://x/d.img", "checksum": "sha256:ab", "attempt": 1}
    assert "history" not in st["machine"] and st["machine"]["state"] == "provisioning"
    # Round trip: what is written is what the next pass reads.
    back = ctl.machine_status(st)
    assert back.state == bm.State.PROVISIONING and back.history == (entry,) and back.attempt == 1


def test_config_problem_is_a_condition():
    problem = ctl.ConfigProblem("CredentialsSecretNotFound", "Secret ns/x (spec.bmc.credentials) does not exist")
    st = status_for(bm.Status(state=bm.State.REGISTERING), problem=problem)
    assert st["phase"] == "Error"
    assert cond(st, "Ready")["reason"] == cond(st, "Registered")["reason"] == "CredentialsSecretNotFound"


def test_node_name_is_reported_when_known():
    assert status_for(bm.Status(state=bm.State.PROVISIONED), node_name="bm0")["nodeName"] == "bm0"
    assert "nodeName" not in status_for(bm.Status(state=bm.State.PAUSED))


IMAGE_SPEC = {"image": {"name": "ubuntu", "namespace": "imgs"}}


@pytest.mark.parametrize(
    "image, expect",
    [
        (None, "ImageNotReady:does not exist"),
        ({"status": {"phase": "importing"}}, "ImageNotReady:is importing"),
        ({"status": {"phase": "active"}}, "ImageNotReady:no http URL"),
        ({"status": {"phase": "active", "checksum": "ab", "dataVolumeSource": {"http": {"url": "http://img/u.qcow2"}}}},
         ("http://img/u.qcow2", "ab", "sha256")),
    ],
    ids=["missing", "not-active", "no-url", "active"],
)
def test_image_reference_resolves_to_its_http_source(monkeypatch, image, expect):
    calls = []

    def get(api_version, plural, name, namespace=None):
        calls.append((plural, name, namespace))
        return image

    monkeypatch.setattr(loop.kube, "get", get)
    node = api.BareMetalNode.model_validate(body(**IMAGE_SPEC))
    if isinstance(expect, tuple):
        assert loop.resolve_image(node) == expect
    else:
        reason, text = expect.split(":", 1)
        with pytest.raises(ctl.ImageNotReady) as err:
            loop.resolve_image(node)
        assert err.value.reason == reason and text in err.value.message
    assert calls == [("images", "ubuntu", "imgs")]


def test_image_url_needs_no_lookup():
    node = api.BareMetalNode.model_validate(body(image={"url": "http://x/d.img", "checksum": "ab", "checksumType": "sha512"}))
    assert loop.resolve_image(node) == ("http://x/d.img", "ab", "sha512")
