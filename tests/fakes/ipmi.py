"""In-memory BMCs with the IPMI driver's interface (metal3's "fixture" provisioner
pattern), for unit tests of the bare-metal controller: no network, no threads.

Integration tests speak real IPMI to OpenIPMI's ipmi_sim; this fake never ships in the
package.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from stratus.drivers.ipmi import (
    _SELECTOR_BOOTDEV,
    AuthenticationFailed,
    BmcAddress,
    BmcClient,
    BmcCredentials,
    BmcError,
    BmcInfo,
    BmcUnreachable,
    BootDevice,
    BootDeviceInfo,
    ChassisStatus,
    CommandUnsupported,
    CpuInfo,
    InspectionResult,
    MemoryModule,
    PowerState,
    PowerStateTimeout,
    parse_address,
)




# --------------------------------------------------------------------------------------------
# The in-memory fake
# --------------------------------------------------------------------------------------------


def sample_inspection(serial: str = "SIM00000", power: PowerState = PowerState.OFF) -> InspectionResult:
    """An inspection result shaped like the simulator's, for tests and docs."""
    return InspectionResult(
        chassis=ChassisStatus(power=power),
        bmc=BmcInfo(manufacturer_id=0x1291, product_id=0x4204, device_id=0, firmware_version="9.08", ipmi_version="2.0"),
        system_uuid="a1234567-89ab-cdef-a123-456789abcdef",
        manufacturer="Stratus Simulated Systems",
        product="SimServer 2U",
        model="SS-2U-1",
        serial=serial,
        cpus=tuple(
            CpuInfo(name=f"CPU {n}", manufacturer="Intel(R) Corporation", model="Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", cores=32, threads=64, speed_mhz=2000)
            for n in (1, 2)
        ),
        memory=tuple(
            MemoryModule(name=f"DIMM {n}", size_mib=16384, memory_type="DDR4 SDRAM", module_type="RDIMM", speed_mts=3200, manufacturer="Samsung")
            for n in (1, 2, 3, 4)
        ),
    )


@dataclasses.dataclass
class FakeHost:
    """The machine and BMC behind a fake address. Tests read and change it directly."""

    username: str = "admin"
    password: str = dataclasses.field(default="password", repr=False)
    power: PowerState = PowerState.OFF
    boot_device: BootDevice = BootDevice.DEFAULT
    boot_persistent: bool = False
    reachable: bool = True
    soft_off_works: bool = True  # False: the OS ignores ACPI shutdown requests
    inspection: InspectionResult | None = None
    faults: dict[str, BmcError] = dataclasses.field(default_factory=dict)  # operation -> error
    calls: list[str] = dataclasses.field(default_factory=list)
    boots: int = 0

    def fail(self, operation: str, error: BmcError | None) -> None:
        """Make ``operation`` ("power_on", "inspect", … or "*") raise ``error`` (None clears)."""
        if error is None:
            self.faults.pop(operation, None)
        else:
            self.faults[operation] = error


class FakeBmcFleet:
    """In-memory BMCs keyed by address; ``client()`` mirrors :func:`connect`."""

    def __init__(self) -> None:
        self.hosts: dict[str, FakeHost] = {}

    def add(self, address: str, **host: Any) -> FakeHost:
        addr = parse_address(address)
        fake = FakeHost(**host)
        self.hosts[addr.url] = fake
        return fake

    def host(self, address: str) -> FakeHost:
        return self.hosts[parse_address(address).url]

    def client(self, address: str | BmcAddress, credentials: BmcCredentials, *, field: str = "spec.bmc.address", **_: Any) -> FakeBmc:
        addr = address if isinstance(address, BmcAddress) else parse_address(address, field)
        return FakeBmc(addr, credentials, self)


class FakeBmc(BmcClient):
    """Behaves like :class:`IpmiClient` against a :class:`FakeHost`, without I/O."""

    def __init__(self, address: BmcAddress, credentials: BmcCredentials, fleet: FakeBmcFleet):
        self.address = address
        self._credentials = credentials
        self._fleet = fleet

    def _host(self, operation: str) -> FakeHost:
        host = self._fleet.hosts.get(self.address.url)
        where = f"{operation.replace('_', ' ')} on {self.address}"
        if host is None or not host.reachable:
            raise BmcUnreachable(f"{where}: no answer from the BMC", address=str(self.address), operation=operation)
        host.calls.append(operation)
        if self._credentials.username != host.username or self._credentials.password != host.password:
            raise AuthenticationFailed(
                f"{where}: authentication failed, the BMC rejected the user name or password",
                address=str(self.address),
                operation=operation,
            )
        error = host.faults.get(operation) or host.faults.get("*")
        if error is not None:
            raise error
        return host

    async def validate(self) -> BmcInfo:
        host = self._host("validate")
        return (host.inspection or sample_inspection()).bmc or BmcInfo(0, 0, 0, "0.00", "2.0")

    async def power_state(self) -> PowerState:
        return self._host("power_state").power

    async def power_on(self, wait: float = 0) -> PowerState:
        host = self._host("power_on")
        if host.power != PowerState.ON:
            host.power = PowerState.ON
            host.boots += 1
        return host.power

    async def power_off(self, wait: float = 0) -> PowerState:
        host = self._host("power_off")
        host.power = PowerState.OFF
        return host.power

    async def soft_off(self, wait: float = 0) -> PowerState:
        host = self._host("soft_off")
        if host.soft_off_works:
            host.power = PowerState.OFF
        elif wait > 0 and host.power == PowerState.ON:
            raise PowerStateTimeout(
                f"soft power off: {self.address} still reports power on after {wait:g}s",
                address=str(self.address),
                operation="soft_off",
            )
        return host.power

    async def reset(self) -> PowerState:
        host = self._host("reset")
        host.power = PowerState.ON
        host.boots += 1
        return host.power

    async def set_boot_device(self, device: BootDevice | str, *, persistent: bool = False, uefi: bool = False) -> None:
        host = self._host("set_boot_device")
        try:
            host.boot_device = BootDevice.parse(device)
        except ValueError as err:
            raise CommandUnsupported(str(err), address=str(self.address), operation="set_boot_device") from None
        host.boot_persistent = persistent

    async def get_boot_device(self) -> BootDeviceInfo:
        host = self._host("get_boot_device")
        selector = {v: k for k, v in reversed(list(_SELECTOR_BOOTDEV.items()))}[host.boot_device]
        return BootDeviceInfo(host.boot_device, selector, host.boot_persistent, False, host.boot_device != BootDevice.DEFAULT)

    async def chassis_status(self) -> ChassisStatus:
        return ChassisStatus(power=self._host("chassis_status").power)

    async def inspect(self) -> InspectionResult:
        host = self._host("inspect")
        result = host.inspection or sample_inspection()
        return dataclasses.replace(result, chassis=ChassisStatus(power=host.power))


