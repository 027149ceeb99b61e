"""BareMetalNode end to end: the real operator, real IPMI to real `ipmi_sim` BMCs (one per
node, each on its own loopback port), the operator's boot server over real HTTP, and the
test playing the booted machine (it fetches its iPXE script and calls back).

What a user sees is asserted: status (provisioningState, poweredOn, conditions,
operationHistory), events, the Kubernetes Node of a hypervisor, and the BMC's real power
and boot device, cross-checked with ipmitool. No node is left powered on: every node is
deleted at the end of its test (the finalizer powers it off) and the simulators are
stopped.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
import urllib.request

import pytest

from stratus.dev.run import free_port

from .bmc import bmc_factory, bmcsim  # noqa: F401 - fixtures
from .bootserver import deploy_files, http_get as _get, http_post as _post, operator_with_boot_server
from .kube import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PLURAL = "baremetalnodes"
DEADLINE = 120  # a loaded machine: generous, bounded


# ---------------------------------------------------------------------------------------
# Fixtures: a file server (deploy kernel, initrd, image), the operator with boot settings
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    with deploy_files(tmp_path_factory.mktemp("bootfiles"), "disk.img", b"a disk image " * 1000,
                      b"deploy " * 100) as served:
        yield served


@pytest.fixture(scope="module")
def boot(operator, files):
    """The session operator, restarted with fast timings, a known boot-server port and
    kwok-simulated hypervisor Nodes; restored to its defaults afterwards."""
    with operator_with_boot_server(operator, files, "test-boot-key", DEADLINE, power_poll="2", poll_interval="1",
                                   backoff_base="2", backoff_max="6") as url:
        yield url


@pytest.fixture
def nodes(kube, namespace, boot, bmc_factory):
    """Create BareMetalNodes for simulators; delete them all at the end and wait until
    they are gone (the finalizer powers each machine off)."""
    made: list[str] = []
    counter = iter(range(100))

    def make(sim, password: str | None = None, **spec) -> str:
        name = f"{namespace[-5:]}-bm{next(counter)}"
        secret = f"{name}-bmc"
        kube.core.create_namespaced_secret(namespace, {
            "metadata": {"name": secret},
            "stringData": {"username": sim.username, "password": sim.password if password is None else password}})
        body = {"kind": "BareMetalNode", "metadata": {"name": name}, "spec": {
            "bmc": {"address": sim.address, "credentials": {"name": secret, "namespace": namespace}},
            "bootMACAddress": "52:54:00:%02x:%02x:%02x" % tuple(hashlib.sha256(name.encode()).digest()[:3]),
            "online": False, **spec}}
        kube.create(PLURAL, body)
        made.append(name)
        return name

    yield make
    for name in made:
        kube.delete(PLURAL, name)
    for name in made:
        wait_for(lambda: kube.get(PLURAL, name) is None, DEADLINE, 0.5, f"BareMetalNode {name} to be deleted")


def private_bmc(bmc_factory, bmcsim):
    """One simulator on a port away from the default range other suites scan from, so that
    a stopped BMC's port is not taken over by someone else's simulator meanwhile."""
    rng = random.Random()
    for _ in range(50):
        port = rng.randrange(30000, 39000)
        if bmcsim.port_is_free(port):
            return bmc_factory(1, base_port=port)[0]
    raise AssertionError("no free loopback UDP port for a simulator")


def status(kube, name: str) -> dict:
    return (kube.get(PLURAL, name) or {}).get("status") or {}


def wait_state(kube, name: str, state: str, timeout: float = DEADLINE) -> dict:
    return wait_for(lambda: (s := status(kube, name)).get("provisioningState") == state and s,
                    timeout, 0.5, f"{name} to reach {state} (status: {status(kube, name).get('provisioningState')})")


def condition(kube, name: str, type_: str) -> dict:
    return next((c for c in status(kube, name).get("conditions") or [] if c["type"] == type_), {})


def ipmitool_power(sim) -> str:
    return sim.ipmitool("chassis", "power", "status").strip().rsplit(" ", 1)[-1]


def events(kube, name: str) -> list:
    evs = kube.core.list_event_for_all_namespaces(field_selector=f"involvedObject.name={name},involvedObject.kind=BareMetalNode")
    return evs.items


def token_not_in_status(kube, name: str, token: str) -> bool:
    """The per-node token is handed to the machine only, never shown in the object or events."""
    text = json.dumps(kube.get(PLURAL, name)) + " ".join(e.message or "" for e in events(kube, name))
    return token not in text


def set_online(kube, name: str, online: bool) -> None:
    kube.patch(PLURAL, name, {"spec": {"online": online}})


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------


def test_enroll_inspect_and_power_for_real(kube, nodes, bmc_factory, bmcsim):
    sim = private_bmc(bmc_factory, bmcsim)
    name = nodes(sim)

    st = wait_state(kube, name, "available")
    assert st["phase"] == "Available"
    assert condition(kube, name, "Registered")["status"] == "True"
    assert condition(kube, name, "Inspected")["status"] == "True"
    assert condition(kube, name, "Ready")["status"] == "True"
    hw = st["hardware"]
    assert hw["serialNumber"] == sim.hardware.serial
    assert hw["memory"]["totalMiB"] == sim.hardware.memory_mib
    assert hw["cpu"]["count"] == len(sim.hardware.cpus)
    assert st["poweredOn"] is False and st["powerState"] == "Off"
    steps = [(h.get("from"), h["to"]) for h in st["operationHistory"]]
    assert ("registering", "inspecting") in steps and ("inspecting", "available") in steps
    assert all(h["at"].endswith("Z") for h in st["operationHistory"])
    reasons = {e.reason for e in events(kube, name)}
    assert {"Registered", "Inspected"} <= reasons, reasons

    # online: true powers the simulator on, for real; poweredOn comes from the BMC.
    set_online(kube, name, True)
    wait_for(lambda: status(kube, name).get("poweredOn") is True, DEADLINE, 0.5, "poweredOn true")
    assert sim.power and ipmitool_power(sim) == "on"
    assert sim.machine_pid is not None  # the machine process runs

    # Someone turns the machine off behind the operator's back: poweredOn follows the BMC
    # (and the controller, which wants it online, turns it on again).
    sim.ipmitool("chassis", "power", "off")
    wait_for(lambda: any("spec.online is true: powering on" in (h.get("message") or "")
                         for h in status(kube, name)["operationHistory"][-6:]), DEADLINE, 0.5, "the drift to be corrected")
    wait_for(lambda: sim.power and status(kube, name).get("poweredOn") is True, DEADLINE, 0.5, "power on again")

    set_online(kube, name, False)
    wait_for(lambda: status(kube, name).get("poweredOn") is False, DEADLINE, 0.5, "poweredOn false")
    assert not sim.power and ipmitool_power(sim) == "off"

    # Deleting a powered-on node powers it off before the object goes.
    set_online(kube, name, True)
    wait_for(lambda: sim.power, DEADLINE, 0.5, "power on")
    kube.delete(PLURAL, name)
    wait_for(lambda: kube.get(PLURAL, name) is None, DEADLINE, 0.5, "the node to be deleted")
    assert not sim.power and ipmitool_power(sim) == "off"


def test_wrong_password_says_authentication_failed_then_recovers(kube, namespace, nodes, bmc_factory, bmcsim):
    sim = private_bmc(bmc_factory, bmcsim)
    wrong = "not-the-password"
    name = nodes(sim, password=wrong)

    cond = wait_for(lambda: (c := condition(kube, name, "Registered")).get("reason") == "AuthenticationFailed" and c,
                    DEADLINE, 0.5, "Registered=False AuthenticationFailed")
    assert cond["status"] == "False"
    assert "authentication" in cond["message"].lower() or "password" in cond["message"].lower(), cond
    st = status(kube, name)
    assert st["provisioningState"] == "registration-error" and st["phase"] == "Error"
    assert condition(kube, name, "Ready")["reason"] == "AuthenticationFailed"
    evs = events(kube, name)
    assert any(e.type == "Warning" and e.reason == "AuthenticationFailed" for e in evs), [e.reason for e in evs]
    # The secret never shows.
    text = json.dumps(kube.get(PLURAL, name)) + " ".join(e.message or "" for e in evs)
    assert wrong not in text and sim.password not in text
    # Retries, not a crash loop: the operator is alive and keeps trying.
    wait_for(lambda: status(kube, name).get("errorCount", 0) >= 2, DEADLINE, 0.5, "a second attempt")

    # Fix the Secret: the node registers on its own.
    kube.core.patch_namespaced_secret(f"{name}-bmc", namespace, {"stringData": {"password": sim.password}})
    wait_state(kube, name, "available")
    assert condition(kube, name, "Registered")["status"] == "True"


def test_bmc_down_mid_operation_retries_and_recovers(kube, nodes, bmc_factory, bmcsim):
    sim = private_bmc(bmc_factory, bmcsim)
    name = nodes(sim)
    wait_state(kube, name, "available")

    sim.stop()  # the BMC goes away; the host keeps its (off) power
    set_online(kube, name, True)
    cond = wait_for(lambda: (c := condition(kube, name, "Ready")).get("reason") == "BMCUnreachable" and c,
                    DEADLINE, 0.5, "Ready=False BMCUnreachable")
    assert cond["status"] == "False"
    assert status(kube, name)["provisioningState"] == "power-management-error"
    assert not sim.power

    sim.start()
    wait_for(lambda: status(kube, name).get("poweredOn") is True and status(kube, name).get("provisioningState") == "available",
             DEADLINE, 0.5, "recovery: available and powered on")
    assert sim.power and ipmitool_power(sim) == "on"
    assert condition(kube, name, "Ready")["status"] == "True"


def test_unsupported_scheme_is_refused_by_the_api_server(kube, namespace):
    from kubernetes.client.rest import ApiException

    body = {"kind": "BareMetalNode", "metadata": {"name": f"{namespace[-5:]}-bad"}, "spec": {
        "bmc": {"address": "foo://10.0.0.1", "credentials": {"name": "x", "namespace": namespace}},
        "bootMACAddress": "52:54:00:00:00:99"}}
    with pytest.raises(ApiException) as err:
        kube.create(PLURAL, body)
    assert err.value.status == 422 and "spec.bmc.address" in err.value.body and "ipmi://" in err.value.body


def test_provision_deprovision_and_hypervisor_node(kube, namespace, nodes, bmc_factory, bmcsim, boot, files):
    sim = private_bmc(bmc_factory, bmcsim)
    user_data = "#cloud-config\nhostname: metal\n"
    kube.core.create_namespaced_secret(namespace, {"metadata": {"name": "ud"}, "stringData": {"userData": user_data}})
    name = nodes(sim, online=True, role="hypervisor",
                 image={"url": files["image_url"], "checksum": files["sha256"]},
                 rootDeviceHints={"deviceName": "/dev/sda"}, userData={"name": "ud", "namespace": namespace})
    mac = kube.get(PLURAL, name)["spec"]["bootMACAddress"]

    st = wait_state(kube, name, "provisioning", timeout=DEADLINE * 2)
    wait_for(lambda: sim.power and sim.boot_device == "pxe", DEADLINE, 0.5, "network boot and power on")
    assert "Force PXE" in sim.ipmitool("chassis", "bootparam", "get", "5")
    assert condition(kube, name, "Provisioned")["reason"] == "Provisioning"

    # The machine: iPXE fetches the generic script, then its own by MAC.
    code, chain = _get(f"{boot}/boot.ipxe")
    assert code == 200 and chain.startswith("#!ipxe") and "${net0/mac}" in chain
    code, script = wait_for(lambda: (r := _get(f"{boot}/ipxe/{mac}"))[0] == 200 and r, DEADLINE, 0.5, "the node's iPXE script")
    assert script.startswith("#!ipxe")
    kernel = re.search(r"^kernel --name vmlinuz (\S+) (.*)$", script, re.M)
    initrd = re.search(r"^initrd --name initrd (\S+)$", script, re.M)
    assert kernel and initrd and "boot" in script.splitlines()
    args = dict(a.split("=", 1) for a in kernel.group(2).split() if "=" in a)
    assert args["stratus.image_url"] == files["image_url"]
    assert args["stratus.image_checksum"] == f"sha256:{files['sha256']}"
    assert args["stratus.root_deviceName"] == "/dev/sda"
    assert token_not_in_status(kube, name, args["stratus.token"])
    for url in (kernel.group(1), initrd.group(1)):
        assert _get(url)[0] == 200
    with urllib.request.urlopen(args["stratus.image_url"], timeout=10) as rsp:  # the ramdisk writes the image
        assert hashlib.sha256(rsp.read()).hexdigest() == files["sha256"]
    assert _get(f"{boot}/ipxe/52:54:00:ff:ff:ff")[0] == 404  # an unknown machine boots locally

    # The ramdisk reads the user data with its token; a wrong token gets nothing.
    callback, token = args["stratus.callback_url"], args["stratus.token"]
    req = urllib.request.Request(args["stratus.user_data_url"], headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as rsp:
        assert rsp.read().decode() == user_data
    assert _get(args["stratus.user_data_url"])[0] == 403

    # A wrong token is refused; the right one completes provisioning.
    assert _post(callback, "0" * 64, {"success": True}) == 403
    assert _post(callback, token, {"success": True, "message": "image written to /dev/sda"}) == 200
    st = wait_state(kube, name, "provisioned")
    assert st["bootCallback"]["success"] is True
    assert condition(kube, name, "Provisioned")["status"] == "True"
    wait_for(lambda: sim.boot_device == "default" or sim.boot_device == "disk", DEADLINE, 0.5, "boot from disk")
    wait_for(lambda: status(kube, name).get("poweredOn") is True, DEADLINE, 0.5, "powered on after provisioning")
    assert _get(f"{boot}/ipxe/{mac}")[0] == 404  # the PXE config is gone
    assert _post(callback, token, {"success": True}) == 403  # a replayed callback is refused

    # Hypervisor: a Kubernetes Node labelled with the BareMetalNode, Ready while on.
    def node_ready():
        try:
            n = kube.core.read_node(name)
        except Exception:  # noqa: BLE001 - not there yet
            return None
        ready = next((c for c in n.status.conditions or [] if c.type == "Ready"), None)
        return n if ready is not None and ready.status == "True" else None

    n = wait_for(node_ready, DEADLINE, 1, "the hypervisor Node to be Ready")
    assert n.metadata.labels["stratus.dev/baremetalnode"] == name
    assert status(kube, name)["nodeName"] == name

    # online: false powers it off over IPMI; the Node becomes NotReady.
    set_online(kube, name, False)
    wait_for(lambda: not sim.power and status(kube, name).get("poweredOn") is False, DEADLINE, 0.5, "power off")
    assert ipmitool_power(sim) == "off"

    def node_not_ready():
        n = kube.core.read_node(name)
        ready = next((c for c in n.status.conditions or [] if c.type == "Ready"), None)
        return ready is not None and ready.status != "True"

    wait_for(node_not_ready, DEADLINE, 1, "the Node to become NotReady")

    # Removing the image deprovisions: off, no PXE config, back to available, Node gone.
    kube.patch(PLURAL, name, {"spec": {"image": None}})
    wait_state(kube, name, "available")
    assert not sim.power
    steps = [(h.get("from"), h["to"]) for h in status(kube, name)["operationHistory"]]
    assert ("provisioned", "deprovisioning") in steps and ("deprovisioning", "available") in steps

    def node_gone():
        try:
            kube.core.read_node(name)
            return False
        except Exception:  # noqa: BLE001 - 404
            return True

    wait_for(node_gone, DEADLINE, 1, "the hypervisor Node to be deleted")
    assert status(kube, name).get("nodeName", "") == ""


def test_reboot_and_detach_annotations(kube, nodes, bmc_factory, bmcsim):
    sim = private_bmc(bmc_factory, bmcsim)
    name = nodes(sim, online=True, inspect=False)
    wait_state(kube, name, "available")
    wait_for(lambda: sim.power and status(kube, name).get("poweredOn") is True, DEADLINE, 0.5, "power on")
    assert "hardware" not in status(kube, name) or not status(kube, name)["hardware"]  # inspect: false

    # One-shot reboot: the machine is reset (a new boot) and the annotation goes away.
    boots = sim.read_state()["boot_count"]
    kube.patch(PLURAL, name, {"metadata": {"annotations": {"stratus.dev/reboot": "hard"}}})
    wait_for(lambda: sim.read_state()["boot_count"] > boots, DEADLINE, 0.5, "the machine to reboot")
    wait_for(lambda: "stratus.dev/reboot" not in (kube.get(PLURAL, name)["metadata"].get("annotations") or {}),
             DEADLINE, 0.5, "the reboot annotation to be removed")
    # The history entry is written with the status after the annotation is removed: wait for it.
    wait_for(lambda: any(h["event"] == "reboot" for h in status(kube, name).get("operationHistory") or []),
             DEADLINE, 0.5, "the reboot in the operation history")
    assert sim.power

    # Detached: the machine is left alone, whatever the spec says.
    kube.patch(PLURAL, name, {"metadata": {"annotations": {"stratus.dev/detached": ""}}})
    wait_state(kube, name, "detached")
    set_online(kube, name, False)
    time.sleep(6)  # three power polls: a controller that ignored the detach would have acted
    assert sim.power and status(kube, name)["provisioningState"] == "detached"

    # Attached again: it re-registers and follows spec.online (off).
    kube.patch(PLURAL, name, {"metadata": {"annotations": {"stratus.dev/detached": None}}})
    wait_state(kube, name, "available")
    wait_for(lambda: not sim.power and status(kube, name).get("poweredOn") is False, DEADLINE, 0.5, "power off after attach")


def test_tftp_serves_ipxe_for_chainloading(tmp_path):
    """Networks whose PXE firmware cannot speak HTTP chain-load iPXE over TFTP first. Needs
    no cluster: the boot server alone, with a TFTP root holding the iPXE binaries."""
    import asyncio

    try:
        import tftpy
    except ImportError:
        pytest.fail("tftpy is not installed: it is the boot server's TFTP dependency (PyPI tftpy)", pytrace=False)
    from stratus.services import bootserver as bs

    root = tmp_path / "tftp"
    root.mkdir()
    blob = bytes(range(256)) * 300  # several TFTP blocks
    (root / "undionly.kpxe").write_bytes(blob)
    port = free_port()

    async def main():
        server = bs.BootServer(bs.Settings(http_port=0, tftp_port=port, tftp_root=str(root), key=b"k"))
        await server.start()
        try:
            out = tmp_path / "got.kpxe"
            await asyncio.to_thread(tftpy.TftpClient("127.0.0.1", port).download, "undionly.kpxe", str(out), timeout=5)
            assert out.read_bytes() == blob
            missing = tmp_path / "missing"
            with pytest.raises(Exception):  # noqa: B017 - tftpy raises its own error types
                await asyncio.to_thread(tftpy.TftpClient("127.0.0.1", port).download, "nope.efi", str(missing), timeout=5)
        finally:
            await server.stop()

    asyncio.run(main())
