"""The IPMI driver against real BMC simulators (ipmi_sim), cross-checked with ipmitool.

No Kubernetes cluster and no mocks: every BMC here is an `ipmi_sim` process on loopback
speaking IPMI 2.0, and every power or boot claim of the driver is checked a second way,
through ipmitool (an independent client) and the simulator's chassis state on disk.
The address-parsing and error-classification tables at the end need no simulator.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from stratus.drivers import ipmi
from tests.fakes.ipmi import FakeBmcFleet
from stratus.drivers.ipmi import (
    AuthenticationFailed,
    BmcCredentials,
    BmcUnreachable,
    BootDevice,
    CommandFailed,
    CommandUnsupported,
    InvalidAddress,
    IpmiExecutor,
    PowerState,
)

from .bmc import bmc, bmc_factory, bmc_fleet, bmcsim, ipmi_client, ipmi_executor  # noqa: F401 - fixtures

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def run(coro):
    return asyncio.run(coro)


def ipmitool_power(sim) -> str:
    out = sim.ipmitool("chassis", "power", "status").strip()
    assert out.startswith("Chassis Power is "), out
    return out.rsplit(" ", 1)[-1]


def ipmitool_boot_selector(sim) -> str:
    out = sim.ipmitool("chassis", "bootparam", "get", "5")
    line = next(line for line in out.splitlines() if "Boot Device Selector" in line)
    return line.split(":", 1)[1].strip()


# ---------------------------------------------------------------------------------------
# Power
# ---------------------------------------------------------------------------------------


def test_power_on_and_off_agree_with_ipmitool(bmc, ipmi_client):
    client = ipmi_client(bmc)
    assert run(client.power_state()) == PowerState.OFF
    assert ipmitool_power(bmc) == "off"

    assert run(client.power_on(wait=10)) == PowerState.ON
    assert ipmitool_power(bmc) == "on"
    assert bmc.power and bmc.machine_pid is not None  # the simulated machine runs

    assert run(client.power_on()) == PowerState.ON  # idempotent: nothing sent
    assert bmc.read_state()["boot_count"] == 1

    assert run(client.power_off(wait=10)) == PowerState.OFF
    assert ipmitool_power(bmc) == "off"
    assert not bmc.power and bmc.machine_pid is None


def test_ipmitool_power_changes_are_seen_by_the_driver(bmc, ipmi_client):
    client = ipmi_client(bmc)
    bmc.ipmitool("chassis", "power", "on")
    assert run(client.power_state()) == PowerState.ON
    bmc.ipmitool("chassis", "power", "off")
    assert run(client.power_state()) == PowerState.OFF


def test_reset_reboots_a_running_host_and_starts_one_that_is_off(bmc, ipmi_client):
    client = ipmi_client(bmc)
    assert run(client.reset()) == PowerState.ON  # off: reset means power on
    first = bmc.machine_pid
    assert run(client.reset()) == PowerState.ON
    assert bmc.read_state()["boot_count"] == 2
    assert bmc.machine_pid not in (None, first)  # a new machine process: it rebooted
    assert ipmitool_power(bmc) == "on"


def test_soft_off_waits_for_the_os_to_shut_down(bmc, ipmi_client):
    client = ipmi_client(bmc)
    run(client.power_on(wait=10))
    assert run(client.soft_off(wait=10)) == PowerState.OFF
    assert ipmitool_power(bmc) == "off"
    assert any("soft off" in line for line in bmc.events())


def test_soft_off_that_the_os_ignores_times_out(bmc_factory, ipmi_client):
    stubborn = ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]
    sim = bmc_factory(1, machine=stubborn)[0]
    client = ipmi_client(sim)
    run(client.power_on(wait=10))
    with pytest.raises(ipmi.PowerStateTimeout) as err:
        run(client.soft_off(wait=1.5))
    assert err.value.reason == "PowerStateTimeout"
    assert "still reports power on" in err.value.message
    assert run(client.power_off(wait=10)) == PowerState.OFF  # the hard way works


def test_a_failing_chassis_is_a_command_failure(bmc, ipmi_client):
    client = ipmi_client(bmc)
    bmc.set_fault("power")
    with pytest.raises(CommandFailed) as err:
        run(client.power_on())
    assert err.value.reason == "BMCCommandFailed"
    assert "power on" in err.value.message and bmc.address in err.value.message
    bmc.set_fault()
    assert run(client.power_on(wait=10)) == PowerState.ON


def test_a_status_read_refused_after_an_accepted_power_change_is_polled_again(bmc, ipmi_client):
    # The chassis accepts "power on", then refuses the one status read right after it
    # (an IpmiException from pyghmi, completion code 0xFF): the command did not fail, the
    # driver reports "not yet" and waiting polls until the host reads as on.
    client = ipmi_client(bmc)
    bmc.set_fault("power-read-after-set")
    assert run(client.power_on()) == PowerState.OFF
    assert ipmitool_power(bmc) == "on"
    assert run(client.power_off(wait=10)) == PowerState.OFF
    assert run(client.power_on(wait=10)) == PowerState.ON
    assert bmc.read_state()["boot_count"] == 2


# ---------------------------------------------------------------------------------------
# Boot device
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "ipmitool_says", "chassis_says"),
    [
        ("pxe", "Force PXE", "pxe"),
        (BootDevice.NETWORK, "Force PXE", "pxe"),
        ("disk", "Force Boot from default Hard-Drive", "default"),
        ("cdrom", "Force Boot from CD/DVD", "cdrom"),
        ("bios", "Force Boot into BIOS Setup", "bios"),
        ("default", "No override", "none"),
    ],
)
def test_set_boot_device_reads_back_with_ipmitool(bmc, ipmi_client, device, ipmitool_says, chassis_says):
    client = ipmi_client(bmc)
    run(client.set_boot_device(device))
    assert ipmitool_boot_selector(bmc) == ipmitool_says
    assert bmc.boot_device == chassis_says
    info = run(client.get_boot_device())
    assert info.device == BootDevice.parse(device)


def test_boot_device_set_by_ipmitool_is_read_by_the_driver(bmc, ipmi_client):
    client = ipmi_client(bmc)
    bmc.ipmitool("chassis", "bootdev", "pxe")
    assert run(client.get_boot_device()).device == BootDevice.NETWORK
    bmc.ipmitool("chassis", "bootdev", "disk")
    assert run(client.get_boot_device()).device == BootDevice.DISK


def test_the_machine_boots_from_the_device_that_was_set(bmc, ipmi_client):
    client = ipmi_client(bmc)
    run(client.set_boot_device("pxe"))
    run(client.power_on(wait=10))
    assert bmc.read_state()["last_boot_device"] == "pxe"
    run(client.set_boot_device("disk"))
    run(client.reset())
    assert bmc.read_state()["last_boot_device"] == "default"


# ---------------------------------------------------------------------------------------
# Credentials, reachability, recovery
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrong", ["password", "username"])
def test_wrong_credentials_fail_fast_with_a_clear_message(bmc, ipmi_client, wrong):
    secret = "not-the-password"
    client = ipmi_client(bmc, password=secret) if wrong == "password" else ipmi_client(bmc, username="nobody")
    for _ in range(2):  # the second try must fail the same way (no stale pyghmi session)
        started = time.monotonic()
        with pytest.raises(AuthenticationFailed) as err:
            run(client.power_state())
        assert time.monotonic() - started < 3
        assert err.value.reason == "AuthenticationFailed"
        assert "authentication failed" in err.value.message
        assert bmc.address in err.value.message
        assert secret not in err.value.message and bmc.password not in err.value.message
        assert not err.value.retryable
    # the right credentials still work afterwards
    assert run(ipmi_client(bmc).power_state()) == PowerState.OFF


def test_nothing_listening_is_unreachable_within_the_timeout(bmcsim, ipmi_client, bmc):
    port = bmcsim.find_free_base_port(1, start=bmc.port + 1)
    client = ipmi.IpmiClient(
        ipmi.parse_address(f"ipmi://127.0.0.1:{port}"), BmcCredentials("admin", "secret"), timeout=8
    )
    started = time.monotonic()
    with pytest.raises(BmcUnreachable) as err:
        run(client.power_state())
    assert time.monotonic() - started < 9
    assert err.value.reason == "BMCUnreachable"
    assert f"127.0.0.1:{port}" in err.value.message


def test_simulator_stopped_mid_operation_then_recovers(bmc_factory, ipmi_client):
    # The host ignores soft off, so soft_off(wait=…) keeps polling the BMC: stop it meanwhile.
    stubborn = ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"]
    sim = bmc_factory(1, machine=stubborn)[0]
    client = ipmi_client(sim, timeout=8)
    run(client.power_on(wait=10))

    async def soft_off_while_the_bmc_dies():
        task = asyncio.create_task(client.soft_off(wait=60))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(sim.stop)
        stopped = time.monotonic()
        with pytest.raises(BmcUnreachable) as err:
            await task
        return time.monotonic() - stopped, err.value

    elapsed, error = run(soft_off_while_the_bmc_dies())
    assert elapsed < 15, f"unreachable only after {elapsed:.1f}s"  # deadline 8 s + slack for a loaded machine
    assert error.reason == "BMCUnreachable" and sim.address in error.message

    sim.start()
    # The host kept its power through the BMC outage, and the driver talks to the new BMC.
    assert run(client.power_state()) == PowerState.ON
    assert ipmitool_power(sim) == "on"
    assert run(client.power_off(wait=10)) == PowerState.OFF
    assert ipmitool_power(sim) == "off"


# ---------------------------------------------------------------------------------------
# Inspection
# ---------------------------------------------------------------------------------------


def test_inspection_reads_the_fru_inventory(bmc, ipmi_client):
    result = run(ipmi_client(bmc).inspect())
    assert result.manufacturer == "Stratus Simulated Systems"
    assert result.product == "SimServer 2U"
    assert result.serial == "SIM00000"
    assert result.chassis.power == PowerState.OFF
    assert result.bmc and result.bmc.ipmi_version == "2.0"
    assert [c.name for c in result.cpus] == ["CPU 1", "CPU 2"]
    assert result.cpus[0].cores == 32 and result.cpus[0].threads == 64
    assert "Xeon" in (result.cpus[0].model or "")
    assert [m.size_mib for m in result.memory] == [16384] * 4
    assert result.memory_mib == 65536
    assert {m.memory_type for m in result.memory} == {"DDR4 SDRAM"}
    assert result.memory[0].speed_mts == 3200 and result.memory[0].manufacturer == "Samsung"
    assert result.notes == ()
    summary = result.to_dict()
    assert summary["cpu"] == {"count": 2, "model": result.cpus[0].model, "cores": 64, "threads": 128}
    assert summary["memory"] == {"totalMiB": 65536, "modules": 4}
    # cross-check with ipmitool's own FRU decoding
    fru = bmc.ipmitool("fru", "print", "0")
    assert "Product Serial        : SIM00000" in fru


# ---------------------------------------------------------------------------------------
# Many BMCs
# ---------------------------------------------------------------------------------------


def test_ten_bmcs_in_parallel_with_bounded_concurrency(bmc_fleet, ipmi_client):
    executor = IpmiExecutor(max_concurrency=3)
    try:
        clients = [ipmi_client(sim, executor=executor) for sim in bmc_fleet]

        async def everyone(op):
            return await asyncio.gather(*(op(c) for c in clients))

        started = time.monotonic()
        assert run(everyone(lambda c: c.power_on(wait=10))) == [PowerState.ON] * 10
        assert all(ipmitool_power(sim) == "on" for sim in bmc_fleet)
        results = run(everyone(lambda c: c.inspect()))
        assert sorted(r.serial for r in results) == sorted(f"SIM{i:05d}" for i in range(10))
        assert run(everyone(lambda c: c.power_off(wait=10))) == [PowerState.OFF] * 10
        assert not any(sim.power for sim in bmc_fleet)
        assert executor.peak_threads <= 3
        assert time.monotonic() - started < 60
    finally:
        executor.shutdown()


def test_many_operations_on_one_bmc_are_serialised(bmc, ipmi_client):
    client = ipmi_client(bmc)

    async def burst():
        return await asyncio.gather(*(client.power_state() for _ in range(12)), client.power_on(), client.inspect())

    results = run(burst())
    assert results[-2] == PowerState.ON
    assert results[-1].serial == "SIM00000"
    assert ipmitool_power(bmc) == "on"


# ---------------------------------------------------------------------------------------
# No simulator needed: address parsing, error classification, the fake
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("ipmi://10.0.0.5:6230", ("ipmi", "10.0.0.5", 6230)),
        ("ipmi://bmc-7.rack1.example", ("ipmi", "bmc-7.rack1.example", 623)),
        ("IPMI://127.0.0.1", ("ipmi", "127.0.0.1", 623)),
        ("127.0.0.1:16241", ("ipmi", "127.0.0.1", 16241)),  # bare host[:port] is IPMI, as in metal3
        ("ipmi://[fd00::5]:623", ("ipmi", "fd00::5", 623)),
        ("  ipmi://host1/  ", ("ipmi", "host1", 623)),
    ],
)
def test_addresses_that_parse(address, expected):
    addr = ipmi.parse_address(address)
    assert (addr.scheme, addr.host, addr.port) == expected


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("foo://host", "spec.bmc.address: unsupported scheme 'foo'; supported: ipmi"),
        ("redfish://host/redfish/v1/Systems/1", "spec.bmc.address: scheme 'redfish' is not supported yet; supported: ipmi"),
        ("", "spec.bmc.address: must not be empty"),
        ("ipmi://", "spec.bmc.address: missing host"),
        ("ipmi://host:99999", "spec.bmc.address: invalid address"),
        ("ipmi://host:0", "spec.bmc.address: port 0 out of range"),
        ("ipmi://host/path", "spec.bmc.address: ipmi addresses have no path"),
        ("ipmi://admin:hunter2@host", "spec.bmc.address: must not contain credentials"),
        ("ipmi://bad_host!", "spec.bmc.address: invalid host name"),
    ],
)
def test_addresses_that_are_refused_name_the_field(address, message):
    with pytest.raises(InvalidAddress) as err:
        ipmi.parse_address(address)
    assert str(err.value).startswith(message)
    assert "hunter2" not in str(err.value)
    assert err.value.reason == "InvalidBMCAddress"


def test_connect_picks_the_backend_by_scheme():
    client = ipmi.connect("ipmi://127.0.0.1:16241", BmcCredentials("admin", "pw"), executor=IpmiExecutor(1))
    assert isinstance(client, ipmi.IpmiClient)
    assert "pw" not in repr(client) and "pw" not in repr(BmcCredentials("admin", "pw"))
    with pytest.raises(InvalidAddress, match="spec.bmc.address: unsupported scheme 'snmp'"):
        ipmi.connect("snmp://127.0.0.1", BmcCredentials("admin", "pw"))


@pytest.mark.parametrize(
    ("exception", "kind", "reason"),
    [
        (("Incorrect password provided", 0), AuthenticationFailed, "AuthenticationFailed"),
        (("Unauthorized name in RAKP2", 0), AuthenticationFailed, "AuthenticationFailed"),
        (("", 0xD4), AuthenticationFailed, "AuthenticationFailed"),
        ((None, 0), BmcUnreachable, "BMCUnreachable"),
        (("timeout", 0), BmcUnreachable, "BMCUnreachable"),
        (("Session no longer connected", 0), BmcUnreachable, "BMCUnreachable"),
        (("Invalid command", 0xC1), CommandUnsupported, "CommandUnsupported"),
        (("Invalid data field in request", 0xCC), CommandUnsupported, "CommandUnsupported"),
        (("Unspecified error", 0xFF), CommandFailed, "BMCCommandFailed"),
    ],
)
def test_pyghmi_errors_are_classified(exception, kind, reason):
    from pyghmi.exceptions import IpmiException

    address = ipmi.parse_address("ipmi://10.1.2.3")
    error = ipmi.classify_error(IpmiException(*exception), address, "power on", secret="s3cr3t-pw")
    assert type(error) is kind and error.reason == reason
    assert error.message.startswith("power on on ipmi://10.1.2.3:623")


def test_classification_masks_the_password():
    from pyghmi.exceptions import IpmiException

    error = ipmi.classify_error(IpmiException("odd reply for s3cr3t-pw"), ipmi.parse_address("h"), "x", secret="s3cr3t-pw")
    assert "s3cr3t-pw" not in error.message and "***" in error.message


def test_the_fake_behaves_like_the_driver():
    fleet = FakeBmcFleet()
    host = fleet.add("ipmi://10.0.0.9", username="admin", password="pw")
    client = fleet.client("ipmi://10.0.0.9", BmcCredentials("admin", "pw"))

    async def scenario():
        assert await client.power_on() == PowerState.ON
        await client.set_boot_device("pxe")
        assert (await client.get_boot_device()).device == BootDevice.NETWORK
        assert (await client.inspect()).memory_mib == 65536
        host.fail("power_off", CommandFailed("power off on ipmi://10.0.0.9:623: injected"))
        with pytest.raises(CommandFailed):
            await client.power_off()
        host.reachable = False
        with pytest.raises(BmcUnreachable):
            await client.power_state()
        host.reachable = True
        with pytest.raises(AuthenticationFailed):
            await fleet.client("ipmi://10.0.0.9", BmcCredentials("admin", "no")).power_state()

    run(scenario())
    assert host.calls[:4] == ["power_on", "set_boot_device", "get_boot_device", "inspect"]


@pytest.mark.parametrize("installed", ["1.6.20", None])
def test_another_pyghmi_release_is_refused_on_first_use_naming_the_expected_one(monkeypatch, installed):
    # The driver patches pyghmi 1.6.19's private internals; on any other release it must not
    # guess. Each operation then fails with a condition-ready error naming the version.
    monkeypatch.setattr(ipmi, "_PYGHMI_READY", False)
    monkeypatch.setattr(ipmi, "_pyghmi_version", lambda: installed)
    client = ipmi.IpmiClient(ipmi.parse_address("ipmi://127.0.0.1:9"), BmcCredentials("admin", "pw"), executor=IpmiExecutor(1))
    for _ in range(2):
        with pytest.raises(ipmi.UnsupportedPyghmi) as err:
            run(client.power_state())
        assert err.value.reason == "UnsupportedPyghmiVersion" and not err.value.retryable
        assert f"pyghmi=={ipmi.PYGHMI_VERSION}" in err.value.message
        assert (f"pyghmi {installed} is installed" if installed else "pyghmi is not installed") in err.value.message
        assert err.value.message.startswith("read power state on ipmi://127.0.0.1:9")
