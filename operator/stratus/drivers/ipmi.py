"""Bare-metal power, boot device and inspection over IPMI (pyghmi), behind a backend interface.

:class:`BmcClient` is what the BareMetalNode controller calls, one client per node:
``power_state``, ``power_on``, ``power_off``, ``soft_off``, ``reset``, ``set_boot_device``,
``get_boot_device``, ``chassis_status``, ``validate`` and ``inspect``, all coroutines.
:func:`connect` parses ``spec.bmc.address`` and returns the client for its scheme:
:class:`IpmiClient` (IPMI 2.0 / RMCP+ through pyghmi) for ``ipmi://host[:port]``.
Controller unit tests use the in-memory fleet in ``tests/fakes/ipmi.py`` with the same
behaviour: no network, no threads (metal3's "fixture" provisioner pattern).

Design decisions
================

pyghmi, run in a bounded thread pool.
    pyghmi is the maintained Python IPMI client (OpenStack's, also behind Ironic's
    virtualbmc); no protocol code is written here beyond decoding standard response
    bytes. Its calls block, so :class:`IpmiExecutor` runs them in a
    ``ThreadPoolExecutor`` of ``max_concurrency`` threads (default 16, or
    ``STRATUS_IPMI_CONCURRENCY``) gated by an asyncio semaphore, so at most that many
    BMC conversations run at once and waiting callers hold no thread. One default
    executor serves the process; tests and benchmarks may make their own.

One session per operation, one operation per BMC at a time.
    pyghmi caches sessions process-wide (``Session.bmc_handlers``, keyed by address and
    credentials) and hands an existing session to any new ``Command`` for the same BMC.
    A cached session that the BMC has meanwhile expired, or that another thread logs out,
    turns into a slow timeout. So every operation logs in, works and logs out (the
    logout waits at most a second), and operations on one BMC (host, port) are
    serialised by a per-BMC lock; operations on different BMCs run in parallel. Logging
    in costs four UDP round trips, little next to a reconcile period, and it keeps the
    few session slots of a real BMC free (Ironic's ipmitool driver does the same). User
    name and password go to pyghmi as bytes: with str, pyghmi 1.6 leaves a stale "login
    in progress" record behind that breaks the next login to the same BMC (see
    ``_forget_login``).

A pyghmi wake-up race, worked around.
    pyghmi 1.6 may miss the wake-up for an answer that arrives before the waiting thread
    registered for it, and then sleeps until its retransmit timer: ~0.75 s for half of
    all commands to a BMC that answers instantly (the simulator on loopback). An
    inspection (about 60 commands) took 20-35 s instead of well under one.
    ``_install_pyghmi_wakeup_fix`` wraps pyghmi's wait so it returns once a packet for the
    BMC is queued; remove it when pyghmi fixes the race. The same function merges pyghmi's
    two session-table locks into one: pyghmi takes them in opposite orders on its send
    and retransmit paths, which deadlocks two threads for good once retransmits happen
    under load (seen with 16 threads and 100 simulators).

Bounded time, typed errors.
    Every operation has a deadline (``timeout``, default 20 s; inspection 60 s). A wrong
    password or an unknown user fails at once (the BMC answers RAKP with an error); a BMC
    that does not answer is given up by pyghmi after about five seconds of retries. If the
    deadline passes first, the caller gets :class:`BmcUnreachable` at once, the session
    is dropped from pyghmi's table at once by a helper thread, without a "Close Session"
    the BMC would not answer (which ends pyghmi's wait loops for it, see ``_logout``),
    and the worker thread finishes in the background, still holding the BMC's lock
    until then; a later call gets a fresh session, never the half-dead one. Errors are classified into
    :class:`AuthenticationFailed`, :class:`BmcUnreachable`, :class:`CommandUnsupported`
    and :class:`CommandFailed` (plus :class:`InvalidAddress` for the spec), each with a
    CamelCase ``reason`` and a human ``message`` fit for a Kubernetes condition. Messages
    name the BMC address and the operation, never the password; as a second guard any
    occurrence of the password in a message is masked. The driver does not retry: the
    caller's backoff (the state machine in :mod:`stratus.core.baremetal`) decides when.

Power changes wait in asyncio, not in threads.
    ``power_on(wait=…)`` sends the chassis command in one short operation, then polls the
    power state from the event loop until it matches or ``wait`` runs out
    (:class:`PowerStateTimeout`). ``wait=0`` returns right after the command. Commands are
    idempotent: powering on a host that is on sends nothing. ``reset`` of a host that is
    off powers it on (there is nothing to reset). ``soft_off`` asks the OS to shut down
    (chassis control 5); whether and when it does is up to the OS.

Boot device.
    :class:`BootDevice` names (network, disk, cdrom, bios, default; aliases pxe, hd, …)
    map to pyghmi's names. Reading it back decodes "Get System Boot Options" parameter 5
    directly rather than through pyghmi's ``get_bootdev``, which reports "default" when
    the BMC has cleared the "valid" flag; that flag is reported separately
    (:attr:`BootDeviceInfo.valid`). ipmi_sim never sets it.

Inspection reads the standard IPMI inventory.
    Get Device ID (BMC vendor and firmware), Get Chassis Status, Get System GUID, the SDR
    repository's FRU device locator records (read here with exact lengths: pyghmi's SDR
    reader decodes bytes past the end of a record when a BMC returns them, as ipmi_sim
    does), and every FRU: FRU 0 gives the system's
    manufacturer, product, model and serial number (product area, falling back to board
    and chassis areas); DIMM FRUs carry SPD data, decoded by pyghmi into size, type, speed,
    vendor, serial and part number; FRUs named "CPU n"/"Processor n" in the standard
    format give the CPU model and, where the vendor adds them as custom fields
    (``cores=``, ``threads=``, ``speed_mhz=``), core and thread counts. FRU data is read
    in chunks that shrink on "request too long" completion codes (0xC7-0xCA); the
    simulator caps reads at 34 bytes, many BMCs at 64 or more, and pyghmi's own reader
    gives up instead of shrinking. pyghmi's FRU and SPD parsers do the decoding.
    What a real BMC does not tell over standard IPMI: CPU model and core counts (only
    through vendor OEM commands, which this driver does not speak), NIC MAC addresses,
    disks and firmware settings. Those belong to in-band inspection (a ramdisk booted
    over PXE), which is not part of this driver. Memory is reported only where DIMMs
    have FRU/SPD records; ``InspectionResult.notes`` says what could not be read.

Addresses.
    ``ipmi://host[:port]`` with port 623 by default; IPv6 hosts in brackets. A bare
    ``host[:port]`` is taken as IPMI, as metal3 does. ``redfish`` family schemes are
    recognised and refused as "not supported yet"; any other scheme is refused naming
    the field, e.g. ``spec.bmc.address: unsupported scheme 'foo'; supported: ipmi``.
    Credentials belong in a Secret, never in the URL: user info in the address is
    refused without echoing it. :func:`register_scheme` adds a backend (Redfish later).
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import dataclasses
import enum
import importlib.metadata
import ipaddress
import logging
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_IPMI_PORT = 623
DEFAULT_TIMEOUT = 20.0
DEFAULT_INSPECT_TIMEOUT = 60.0
DEFAULT_CONCURRENCY = 16
POWER_POLL_INTERVAL = 0.5

# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class BmcError(Exception):
    """Base of every driver error: a CamelCase ``reason`` and a human ``message``.

    ``retryable`` says whether trying again later, unchanged, can succeed.
    """

    reason = "BMCError"
    retryable = True

    def __init__(self, message: str, *, address: str | None = None, operation: str | None = None):
        super().__init__(message)
        self.message = message
        self.address = address
        self.operation = operation

    def __str__(self) -> str:
        return self.message


class InvalidAddress(BmcError, ValueError):
    reason = "InvalidBMCAddress"
    retryable = False


class AuthenticationFailed(BmcError):
    """The BMC refused the user name or password (or the user lacks the privilege)."""

    reason = "AuthenticationFailed"
    retryable = False


class BmcUnreachable(BmcError):
    """No answer from the BMC in time: wrong address, network down, BMC rebooting."""

    reason = "BMCUnreachable"


class CommandUnsupported(BmcError):
    """The BMC does not implement this command or option."""

    reason = "CommandUnsupported"
    retryable = False


class CommandFailed(BmcError):
    """The BMC answered with an error for a command it supports."""

    reason = "BMCCommandFailed"


class PowerStateTimeout(CommandFailed):
    """A power change was accepted but the host did not reach the state in time."""

    reason = "PowerStateTimeout"


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


class PowerState(str, enum.Enum):
    ON = "on"
    OFF = "off"


class BootDevice(str, enum.Enum):
    NETWORK = "network"
    DISK = "disk"
    CDROM = "cdrom"
    BIOS = "bios"
    DEFAULT = "default"

    @classmethod
    def parse(cls, value: BootDevice | str) -> BootDevice:
        if isinstance(value, BootDevice):
            return value
        key = str(value).strip().lower()
        try:
            return _BOOT_ALIASES[key]
        except KeyError:
            names = ", ".join(d.value for d in cls)
            raise ValueError(f"unknown boot device {value!r}; one of {names} (or pxe, hd, cd, setup)") from None


_BOOT_ALIASES = {
    "network": BootDevice.NETWORK,
    "pxe": BootDevice.NETWORK,
    "net": BootDevice.NETWORK,
    "disk": BootDevice.DISK,
    "hd": BootDevice.DISK,
    "hdd": BootDevice.DISK,
    "cdrom": BootDevice.CDROM,
    "cd": BootDevice.CDROM,
    "dvd": BootDevice.CDROM,
    "optical": BootDevice.CDROM,
    "bios": BootDevice.BIOS,
    "setup": BootDevice.BIOS,
    "default": BootDevice.DEFAULT,
    "none": BootDevice.DEFAULT,
}
# BootDevice -> pyghmi's set_bootdev name
_PYGHMI_BOOTDEV = {
    BootDevice.NETWORK: "network",
    BootDevice.DISK: "hd",
    BootDevice.CDROM: "cdrom",
    BootDevice.BIOS: "setup",
    BootDevice.DEFAULT: "default",
}
# Boot device selector (IPMI 2.0 table 28-14, parameter 5 data 2 bits 5:2) -> BootDevice
_SELECTOR_BOOTDEV = {
    0x0: BootDevice.DEFAULT,
    0x1: BootDevice.NETWORK,
    0x2: BootDevice.DISK,
    0x3: BootDevice.DISK,  # disk, safe mode
    0x5: BootDevice.CDROM,
    0x6: BootDevice.BIOS,
}


@dataclasses.dataclass(frozen=True)
class BmcCredentials:
    username: str
    password: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class BmcAddress:
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.url


@dataclasses.dataclass(frozen=True)
class BootDeviceInfo:
    device: BootDevice | None  # None: a selector this driver has no name for
    selector: int
    persistent: bool
    uefi: bool
    valid: bool


@dataclasses.dataclass(frozen=True)
class ChassisStatus:
    power: PowerState
    power_overload: bool = False
    interlock: bool = False
    power_fault: bool = False
    power_control_fault: bool = False
    restore_policy: str = "unknown"
    last_power_event: tuple[str, ...] = ()
    intrusion: bool = False
    drive_fault: bool = False
    cooling_fault: bool = False

    @classmethod
    def decode(cls, data: bytes) -> ChassisStatus:
        current = data[0]
        last = data[1] if len(data) > 1 else 0
        misc = data[2] if len(data) > 2 else 0
        events = [name for bit, name in _LAST_POWER_EVENTS if last & bit]
        return cls(
            power=PowerState.ON if current & 0x01 else PowerState.OFF,
            power_overload=bool(current & 0x02),
            interlock=bool(current & 0x04),
            power_fault=bool(current & 0x08),
            power_control_fault=bool(current & 0x10),
            restore_policy=("always-off", "previous", "always-on", "unknown")[(current >> 5) & 0x3],
            last_power_event=tuple(events),
            intrusion=bool(misc & 0x01),
            drive_fault=bool(misc & 0x04),
            cooling_fault=bool(misc & 0x08),
        )


_LAST_POWER_EVENTS = (
    (0x01, "ac-failed"),
    (0x02, "overload"),
    (0x04, "interlock"),
    (0x08, "fault"),
    (0x10, "ipmi-command"),
)


@dataclasses.dataclass(frozen=True)
class BmcInfo:
    """Get Device ID: who made the BMC and what firmware it runs."""

    manufacturer_id: int
    product_id: int
    device_id: int
    firmware_version: str
    ipmi_version: str

    @classmethod
    def decode(cls, data: bytes) -> BmcInfo:
        return cls(
            device_id=data[0],
            firmware_version=f"{data[2] & 0x7F}.{data[3]:02x}",
            ipmi_version=f"{data[4] & 0x0F}.{data[4] >> 4}",
            manufacturer_id=int.from_bytes(bytes(data[6:9]), "little") & 0x0FFFFF,
            product_id=int.from_bytes(bytes(data[9:11]), "little"),
        )


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    name: str
    manufacturer: str | None = None
    model: str | None = None
    cores: int | None = None
    threads: int | None = None
    speed_mhz: int | None = None


@dataclasses.dataclass(frozen=True)
class MemoryModule:
    name: str
    size_mib: int | None = None
    memory_type: str | None = None
    module_type: str | None = None
    speed_mts: int | None = None
    manufacturer: str | None = None
    serial: str | None = None
    part_number: str | None = None


@dataclasses.dataclass(frozen=True)
class InspectionResult:
    """What the BMC told about the machine. ``to_dict`` gives a JSON-safe summary."""

    chassis: ChassisStatus
    bmc: BmcInfo | None = None
    system_uuid: str | None = None
    manufacturer: str | None = None
    product: str | None = None
    model: str | None = None
    serial: str | None = None
    asset_tag: str | None = None
    board: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    cpus: tuple[CpuInfo, ...] = ()
    memory: tuple[MemoryModule, ...] = ()
    components: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def memory_mib(self) -> int | None:
        sizes = [m.size_mib for m in self.memory if m.size_mib]
        return sum(sizes) if sizes else None

    @property
    def cpu_count(self) -> int:
        return len(self.cpus)

    def to_dict(self) -> dict[str, Any]:
        """A camelCase summary for a status field (no raw FRU dumps)."""
        cores = [c.cores for c in self.cpus if c.cores]
        threads = [c.threads for c in self.cpus if c.threads]
        return _drop_none(
            {
                "manufacturer": self.manufacturer,
                "product": self.product,
                "model": self.model,
                "serialNumber": self.serial,
                "assetTag": self.asset_tag or None,
                "systemUUID": self.system_uuid,
                "power": self.chassis.power.value,
                "cpu": _drop_none(
                    {
                        "count": self.cpu_count,
                        "model": self.cpus[0].model if self.cpus else None,
                        "cores": sum(cores) if cores else None,
                        "threads": sum(threads) if threads else None,
                    }
                ),
                "memory": _drop_none({"totalMiB": self.memory_mib, "modules": len(self.memory)}),
                "bmc": _drop_none(
                    {
                        "manufacturerID": self.bmc.manufacturer_id if self.bmc else None,
                        "firmwareVersion": self.bmc.firmware_version if self.bmc else None,
                        "ipmiVersion": self.bmc.ipmi_version if self.bmc else None,
                    }
                ),
                "notes": list(self.notes) or None,
            }
        )


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# --------------------------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------------------------

# Schemes metal3 and Ironic know that a later Stratus backend may implement.
_PLANNED_SCHEMES = {"redfish", "redfish+http", "redfish+https", "redfish-virtualmedia", "idrac", "idrac-redfish", "ilo5-redfish"}
_BACKENDS: dict[str, Callable[..., BmcClient]] = {}


def supported_schemes() -> tuple[str, ...]:
    return tuple(sorted(_BACKENDS))


def parse_address(address: str, field: str = "spec.bmc.address") -> BmcAddress:
    """Parse ``ipmi://host[:port]`` (or a bare ``host[:port]``); raise :class:`InvalidAddress`."""
    text = (address or "").strip()
    if not text:
        raise InvalidAddress(f"{field}: must not be empty; expected ipmi://host[:port]")
    supported = ", ".join(supported_schemes())
    if "://" in text:
        scheme, rest = text.split("://", 1)
        scheme = scheme.lower()
    else:
        scheme, rest = "ipmi", text
    if scheme not in _BACKENDS:
        if scheme in _PLANNED_SCHEMES:
            raise InvalidAddress(f"{field}: scheme '{scheme}' is not supported yet; supported: {supported}")
        shown = scheme if re.fullmatch(r"[a-z0-9+.-]{1,32}", scheme) else scheme[:32].encode("unicode_escape").decode()
        raise InvalidAddress(f"{field}: unsupported scheme '{shown}'; supported: {supported}")
    if "@" in rest.split("/", 1)[0]:
        raise InvalidAddress(f"{field}: must not contain credentials; put them in the credentials Secret")
    try:
        parts = urlsplit("//" + rest)
        port = parts.port
    except ValueError as err:
        raise InvalidAddress(f"{field}: invalid address ({err}); expected {scheme}://host[:port]") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidAddress(f"{field}: {scheme} addresses have no path or query; expected {scheme}://host[:port]")
    host = parts.hostname or ""
    if not host:
        raise InvalidAddress(f"{field}: missing host; expected {scheme}://host[:port]")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidAddress(f"{field}: invalid IPv6 address '{host}'") from None
    elif not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", host):
        raise InvalidAddress(f"{field}: invalid host name '{host[:64]}'")
    if port is None:
        port = DEFAULT_IPMI_PORT
    if not 1 <= port <= 65535:
        raise InvalidAddress(f"{field}: port {port} out of range 1-65535")
    return BmcAddress(scheme, host, port)


def register_scheme(scheme: str, factory: Callable[..., BmcClient]) -> None:
    """Make ``scheme://`` addresses resolve to ``factory(address, credentials, **options)``."""
    _BACKENDS[scheme.lower()] = factory


def connect(
    address: str | BmcAddress,
    credentials: BmcCredentials,
    *,
    field: str = "spec.bmc.address",
    **options: Any,
) -> BmcClient:
    """The client for a node's BMC: parses the address and picks the backend by scheme."""
    addr = address if isinstance(address, BmcAddress) else parse_address(address, field)
    if addr.scheme not in _BACKENDS:
        raise InvalidAddress(f"{field}: unsupported scheme '{addr.scheme}'; supported: {', '.join(supported_schemes())}")
    return _BACKENDS[addr.scheme](addr, credentials, **options)


# --------------------------------------------------------------------------------------------
# The backend interface
# --------------------------------------------------------------------------------------------


class BmcClient(abc.ABC):
    """One node's BMC. Every method is idempotent and raises only :class:`BmcError`s."""

    address: BmcAddress

    @abc.abstractmethod
    async def validate(self) -> BmcInfo:
        """Log in and read the BMC's identity: proves address and credentials."""

    @abc.abstractmethod
    async def power_state(self) -> PowerState: ...

    @abc.abstractmethod
    async def power_on(self, wait: float = 0) -> PowerState:
        """Power on unless on; with ``wait`` > 0, until the BMC reports on."""

    @abc.abstractmethod
    async def power_off(self, wait: float = 0) -> PowerState:
        """Hard power off unless off; with ``wait`` > 0, until the BMC reports off."""

    @abc.abstractmethod
    async def soft_off(self, wait: float = 0) -> PowerState:
        """Ask the OS to shut down (ACPI); with ``wait`` > 0, until the BMC reports off."""

    @abc.abstractmethod
    async def reset(self) -> PowerState:
        """Hard reset a running host; a host that is off is powered on."""

    @abc.abstractmethod
    async def set_boot_device(self, device: BootDevice | str, *, persistent: bool = False, uefi: bool = False) -> None: ...

    @abc.abstractmethod
    async def get_boot_device(self) -> BootDeviceInfo: ...

    @abc.abstractmethod
    async def chassis_status(self) -> ChassisStatus: ...

    @abc.abstractmethod
    async def inspect(self) -> InspectionResult: ...

    async def _wait_power(self, want: PowerState, wait: float, operation: str) -> PowerState:
        """Poll until the BMC reports `want`. A status read that the BMC refuses while the
        host changes state (ipmi_sim does, and so do some real BMCs) is polled again
        until the deadline; only the last such error is raised."""
        deadline = time.monotonic() + wait

        async def read() -> PowerState | CommandFailed:
            try:
                return await self.power_state()
            except PowerStateTimeout:
                raise
            except CommandFailed as exc:
                return exc

        state = await read()
        while state != want:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if isinstance(state, CommandFailed):
                    raise state
                raise PowerStateTimeout(
                    f"{operation}: {self.address} still reports power {state.value} after {wait:g}s",
                    address=str(self.address),
                    operation=operation,
                )
            await asyncio.sleep(min(POWER_POLL_INTERVAL, remaining))
            state = await read()
        return state


# --------------------------------------------------------------------------------------------
# The executor: bounded threads, per-BMC serialisation, deadlines
# --------------------------------------------------------------------------------------------


class IpmiExecutor:
    """Runs blocking pyghmi work in at most ``max_concurrency`` threads.

    Safe to share between event loops (each loop gets its own semaphore and locks).
    """

    _default: IpmiExecutor | None = None
    _default_lock = threading.Lock()

    def __init__(self, max_concurrency: int | None = None):
        if max_concurrency is None:
            max_concurrency = int(os.environ.get("STRATUS_IPMI_CONCURRENCY", DEFAULT_CONCURRENCY))
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self._pool = concurrent.futures.ThreadPoolExecutor(max_concurrency, thread_name_prefix="ipmi")
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[asyncio.Semaphore, dict]] = (
            weakref.WeakKeyDictionary()
        )
        self._guard = threading.Lock()
        self.busy_threads = 0  # for tests and metrics
        self.peak_threads = 0

    @classmethod
    def default(cls) -> IpmiExecutor:
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls()
            return cls._default

    def _primitives(self, key: tuple[str, int]) -> tuple[asyncio.Semaphore, asyncio.Lock]:
        loop = asyncio.get_running_loop()
        with self._guard:
            entry = self._per_loop.get(loop)
            if entry is None:
                entry = (asyncio.Semaphore(self.max_concurrency), {})
                self._per_loop[loop] = entry
            sem, locks = entry
            lock = locks.get(key)
            if lock is None:
                lock = locks[key] = asyncio.Lock()
        return sem, lock

    def _tracked(self, fn: Callable[[], T]) -> Callable[[], T]:
        def run() -> T:
            with self._guard:
                self.busy_threads += 1
                self.peak_threads = max(self.peak_threads, self.busy_threads)
            try:
                return fn()
            finally:
                with self._guard:
                    self.busy_threads -= 1

        return run

    async def run(
        self,
        key: tuple[str, int],
        fn: Callable[[], T],
        *,
        timeout: float,
        describe: str,
        on_timeout: Callable[[], None] | None = None,
    ) -> T:
        """Run ``fn`` in a thread, one at a time per ``key``; raise BmcUnreachable at the deadline.

        The deadline covers the wait for the BMC's lock and the thread's work, not the
        wait for a free thread (that is our own queue, not the BMC being slow).
        ``on_timeout`` is called (in a helper thread) when the deadline passes, to make
        the stuck work give up sooner.
        """
        sem, lock = self._primitives(key)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(lock.acquire(), timeout)
        except TimeoutError:
            raise BmcUnreachable(
                f"{describe}: an earlier operation on this BMC is still waiting for an answer after {timeout:g}s"
            ) from None
        try:
            await sem.acquire()
        except BaseException:
            lock.release()
            raise
        try:
            future = loop.run_in_executor(self._pool, self._tracked(fn))
        except BaseException:
            sem.release()
            lock.release()
            raise

        def release(_: asyncio.Future) -> None:
            # Only when the thread is done: a timed-out call keeps the BMC locked until then.
            sem.release()
            lock.release()

        future.add_done_callback(release)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            if on_timeout is not None:
                threading.Thread(target=on_timeout, name="ipmi-abort", daemon=True).start()
            raise BmcUnreachable(f"{describe}: no answer within {timeout:g}s") from None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------
# Error classification
# --------------------------------------------------------------------------------------------

_AUTH_PATTERNS = re.compile(
    r"password|unauthori[sz]ed name|rakp|kg\b|authenticat|invalid (user|role)|privilege", re.IGNORECASE
)
_UNREACHABLE_PATTERNS = re.compile(
    r"timeout|timed out|no longer connected|failed to initialize|disconnected|unreachable|no route", re.IGNORECASE
)
_UNSUPPORTED_CODES = {0xC1, 0xC2, 0xCC, 0xC9}  # invalid command, wrong LUN, invalid field, out of range
_PRIVILEGE_CODE = 0xD4
_COMPLETION_CODES = {
    0xC0: "node busy",
    0xC1: "invalid command",
    0xC3: "timeout while processing command",
    0xC4: "out of space",
    0xC7: "request data length invalid",
    0xC8: "request data field length limit exceeded",
    0xC9: "parameter out of range",
    0xCA: "cannot return number of requested data bytes",
    0xCB: "requested sensor, data, or record not present",
    0xCC: "invalid data field in request",
    0xCD: "command illegal for specified sensor or record type",
    0xCE: "command response could not be provided",
    0xD4: "insufficient privilege level",  # pyghmi adds "or firmware firewall"
    0xD5: "command not supported in present state",
    0xFF: "unspecified error",
}


def _code_of_text(text: str) -> int:
    """The completion code behind pyghmi's message for it.

    pyghmi's helpers (set_power, get_power, set_bootdev) raise IpmiException with the
    code's text only, without the code; the texts are IPMI's own names for the codes.
    """
    lowered = text.lower()
    for code, name in _COMPLETION_CODES.items():
        if lowered.startswith(name):
            return code
    return 0


def _mask(message: str, secret: str | None) -> str:
    if secret and len(secret) >= 3:
        message = message.replace(secret, "***")
    return message


def classify_error(err: BaseException, address: BmcAddress, operation: str, secret: str | None = None) -> BmcError:
    """Map a pyghmi/socket exception to a typed :class:`BmcError` with a condition-ready message."""
    if isinstance(err, BmcError):
        return err
    where = f"{operation} on {address}"
    try:
        from pyghmi import exceptions as pyghmi_exc
    except ImportError:  # pragma: no cover - pyghmi is a dependency
        pyghmi_exc = None
    if isinstance(err, socket.gaierror):
        return BmcUnreachable(f"{where}: cannot resolve host {address.host}", address=str(address), operation=operation)
    if pyghmi_exc is not None and isinstance(err, pyghmi_exc.IpmiException):
        text = _mask(str(err.args[0]) if err.args and err.args[0] else "", secret)
        code = getattr(err, "ipmicode", 0) or _code_of_text(text)
        if code == _PRIVILEGE_CODE:
            return AuthenticationFailed(
                f"{where}: the BMC user lacks the privilege for this command (administrator needed)",
                address=str(address),
                operation=operation,
            )
        if code in _UNSUPPORTED_CODES:
            detail = _COMPLETION_CODES.get(code, f"completion code 0x{code:02X}")
            return CommandUnsupported(f"{where}: not supported by this BMC ({detail})", address=str(address), operation=operation)
        if _AUTH_PATTERNS.search(text):
            return AuthenticationFailed(
                f"{where}: authentication failed, the BMC rejected the user name or password ({text})",
                address=str(address),
                operation=operation,
            )
        if not text or _UNREACHABLE_PATTERNS.search(text):
            return BmcUnreachable(f"{where}: no answer from the BMC", address=str(address), operation=operation)
        if code:
            text = f"{text} (completion code 0x{code:02X})"
        return CommandFailed(f"{where}: the BMC refused the command: {text}", address=str(address), operation=operation)
    if pyghmi_exc is not None and isinstance(err, pyghmi_exc.InvalidParameterValue):
        return CommandUnsupported(f"{where}: {_mask(str(err), secret)}", address=str(address), operation=operation)
    if isinstance(err, (TimeoutError, socket.timeout)):
        return BmcUnreachable(f"{where}: no answer from the BMC", address=str(address), operation=operation)
    if isinstance(err, OSError):
        return BmcUnreachable(f"{where}: {err.strerror or err}", address=str(address), operation=operation)
    text = _mask(str(err), secret)[:200]
    return CommandFailed(f"{where}: unexpected {type(err).__name__}: {text}", address=str(address), operation=operation)


def _raise_for_code(response: Mapping[str, Any], what: str) -> None:
    """Raise pyghmi's IpmiException for an error response, with its completion code."""
    from pyghmi import exceptions as pyghmi_exc

    if response.get("error") or response.get("code"):
        code = response.get("code") or 0
        text = response.get("error") or _COMPLETION_CODES.get(code, f"completion code 0x{code:02X}")
        raise pyghmi_exc.IpmiException(f"{what}: {text}" if text else "", code if code != 0xFFFF else 0)


# --------------------------------------------------------------------------------------------
# The IPMI client
# --------------------------------------------------------------------------------------------

#: The pyghmi release whose private internals the three workarounds below patch or read.
#: Another release fails loudly on first use (:class:`UnsupportedPyghmi`) until someone has
#: checked each workaround against it (is the race still there? the lock inversion? the
#: login table keyed differently?) and updated this constant and requirements.lock together.
PYGHMI_VERSION = "1.6.19"

_PYGHMI_LOCK = threading.Lock()
_PYGHMI_READY: bool | BaseException = False
_WAKEUP_FIRST_SLICE = 0.002
_WAKEUP_MAX_SLICE = 0.1


class UnsupportedPyghmi(BmcError):
    """The installed pyghmi is not the release the driver's workarounds were written for."""

    reason = "UnsupportedPyghmiVersion"
    retryable = False


def _pyghmi_version() -> str | None:
    try:
        return importlib.metadata.version("pyghmi")
    except importlib.metadata.PackageNotFoundError:
        return None


def _ensure_pyghmi() -> None:
    """Check the pyghmi version, then install the workarounds (once; idempotent).

    Raises :class:`UnsupportedPyghmi` naming the expected version when pyghmi is missing,
    another release, or lacks an internal the workarounds touch. Called on first use, not
    at import, so that an operator with the wrong pyghmi still runs every other kind and
    reports the problem as a BareMetalNode condition.
    """
    global _PYGHMI_READY
    with _PYGHMI_LOCK:
        if _PYGHMI_READY is True:
            return
        if isinstance(_PYGHMI_READY, BaseException):
            raise _PYGHMI_READY
        installed = _pyghmi_version()
        problem = None
        if installed != PYGHMI_VERSION:
            problem = f"pyghmi {installed} is installed" if installed else "pyghmi is not installed"
        else:
            from pyghmi.ipmi.private import session as pyghmi_session

            missing = [
                name
                for name, holder in (
                    ("_io_wait", pyghmi_session),
                    ("WAITING_SESSIONS", pyghmi_session),
                    ("KEEPALIVE_SESSIONS", pyghmi_session),
                    ("bmc_handlers", pyghmi_session.Session),
                    ("initting_sessions", pyghmi_session.Session),
                )
                if not hasattr(holder, name)
            ]
            if missing:
                problem = f"pyghmi {installed} lacks {', '.join(missing)}"
        if problem:
            _PYGHMI_READY = UnsupportedPyghmi(
                f"{problem}: the IPMI driver works around three problems of pyghmi {PYGHMI_VERSION} through its "
                f"private internals (stratus.drivers.ipmi); install pyghmi=={PYGHMI_VERSION}, or re-check the "
                "workarounds against this release and update PYGHMI_VERSION"
            )
            raise _PYGHMI_READY
        _install_pyghmi_wakeup_fix()
        _PYGHMI_READY = True


def _install_pyghmi_wakeup_fix() -> None:
    """Workarounds 1 and 2 (pyghmi 1.6.19; called once, by :func:`_ensure_pyghmi`).

    1. A lost-wakeup race in pyghmi's response wait (``session._io_wait``). A command
       thread sends its request and only then registers to be woken for the BMC's
       address. When the answer comes back before that registration (a BMC on loopback
       answers in microseconds), pyghmi's I/O thread has already queued the packet and
       nobody wakes the command thread: it sleeps until its retransmit timer (0.5-1 s),
       so half of all commands to a fast BMC take ~0.75 s instead of ~0 ms. This wrapper
       makes that wait return as soon as a packet for the address is queued, checking
       before the wait and then after slices of 2, 4, 8 … ms (at most 100 ms): a wake-up
       lost in the instant between a check and the next registration costs one slice,
       not a retransmit. Real BMCs over a network rarely answer fast enough to hit the
       race; the simulator nearly always does. No public hook exists for the wait.
    2. A lock-order inversion: ``awaitresponse`` holds ``WAITING_SESSIONS`` and
       retransmits (``send_payload`` takes ``KEEPALIVE_SESSIONS``), while
       ``send_payload`` holds ``KEEPALIVE_SESSIONS`` and ``_xmit_packet`` takes
       ``WAITING_SESSIONS``. Two threads doing one each deadlock for good (seen with 16
       threads and 100 BMCs). Both are RLocks read from the module at each use: one lock
       for both makes the inversion impossible.
    """
    from pyghmi.ipmi.private import session as pyghmi_session

    pyghmi_session.KEEPALIVE_SESSIONS = pyghmi_session.WAITING_SESSIONS
    original = pyghmi_session._io_wait
    if getattr(original, "_stratus_wakeup_fix", False):
        return

    def pending(address: Any) -> bool:
        try:
            sessions = list(pyghmi_session.Session.bmc_handlers.get(address, {}).values())
        except RuntimeError:  # changed size during iteration: look again next slice
            return False
        return any(getattr(s, "pktqueue", None) for s in sessions)

    def io_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
        if myaddr is None or evq is not None:
            return original(timeout, myaddr, evq)
        deadline = time.monotonic() + timeout
        piece = _WAKEUP_FIRST_SLICE
        while not pending(myaddr):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            piece = min(remaining, piece)
            began = time.monotonic()
            original(piece, myaddr)
            if time.monotonic() - began < piece * 0.9:
                return None  # woken by traffic or a timer, as before
            piece = min(piece * 2, _WAKEUP_MAX_SLICE)
        return None

    io_wait._stratus_wakeup_fix = True  # type: ignore[attr-defined]
    pyghmi_session._io_wait = io_wait


def _forget_login(address: BmcAddress, credentials: BmcCredentials) -> None:
    """Workaround 3 (pyghmi 1.6.19): drop pyghmi's record of a login in progress.

    pyghmi files logins under (host, user, password, port, kg) exactly as passed to
    Command, but removes the entry under the byte-encoded user and password. With str
    credentials the entry outlives the session, and the next Command for the same BMC
    gets the dead session back (a TypeError, or "Session no longer connected" after a
    wrong password). Passing bytes makes both keys agree; this sweep guards the rest.
    """
    from pyghmi.ipmi.private.session import Session

    user, password = credentials.username, credentials.password
    for key in [(address.host, u, p, address.port, None) for u in (user, user.encode()) for p in (password, password.encode())]:
        Session.initting_sessions.pop(key, None)


def _logout(session: Any, *, tell_bmc: bool = True) -> None:
    """Log a pyghmi session out, and drop it even when the BMC does not answer the logout.

    ``tell_bmc=False`` (an operation that timed out: the BMC is not answering) skips the
    "Close Session" command and drops the session at once, so that no other Command is
    handed it while a logout waits for an answer that does not come.

    Part of workaround 3: pyghmi's logout sends "Close Session" first and only then marks the
    session broken and removes it from its table (``Session.bmc_handlers``). When the BMC
    has died or restarted, that command raises and the session stays in the table as
    logged in: the next Command for the same BMC is handed it and waits for answers to a
    session the new BMC never heard of (a full timeout, then more). Clearing ``logged``
    and logging out again skips the command and does only the local part.
    """
    if tell_bmc:
        try:
            session.logout()
            return
        except Exception:  # noqa: BLE001 - dropped locally below
            pass
    try:
        session.logged = 0
        session.logout()
    except Exception:  # noqa: BLE001 - nothing more to do
        pass


_FRU_SHRINK_CODES = {0xC7, 0xC8, 0xC9, 0xCA}
_FRU_FIRST_CHUNK = 64
_FRU_MIN_CHUNK = 8
_FRU_ABSENT_CODES = {0xCB, 0xCC, 0xC9, 0xC3, 0x81}  # not present, invalid id, out of range, timeout, busy


class IpmiClient(BmcClient):
    """A node's BMC over IPMI 2.0 (RMCP+, lanplus) through pyghmi."""

    def __init__(
        self,
        address: BmcAddress,
        credentials: BmcCredentials,
        *,
        executor: IpmiExecutor | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        inspect_timeout: float = DEFAULT_INSPECT_TIMEOUT,
    ):
        if address.scheme != "ipmi":
            raise InvalidAddress(f"not an IPMI address: {address}")
        self.address = address
        self._credentials = credentials
        self._executor = executor or IpmiExecutor.default()
        self.timeout = timeout
        self.inspect_timeout = inspect_timeout

    def __repr__(self) -> str:
        return f"IpmiClient({self.address}, user={self._credentials.username!r})"

    # -- plumbing ----------------------------------------------------------------------------
    def _session_call(self, operation: str, work: Callable[[Any], T], holder: list[Any]) -> Callable[[], T]:
        """Blocking: log in, run ``work(command)``, log out; pyghmi errors classified.

        The Command goes into ``holder`` so a timed-out call can be aborted from outside.
        """

        def call() -> T:
            from pyghmi.ipmi import command as ipmi_command

            cmd = None
            started = time.monotonic()
            try:
                cmd = ipmi_command.Command(
                    bmc=self.address.host,
                    userid=self._credentials.username.encode(),
                    password=self._credentials.password.encode(),
                    port=self.address.port,
                )
                holder.append(cmd)
                return work(cmd)
            except BaseException as err:  # noqa: BLE001 - classified and re-raised
                typed = classify_error(err, self.address, operation, self._credentials.password)
                log.info("BMC %s %s failed after %.1fs: %s", self.address, operation, time.monotonic() - started, typed.reason)
                raise typed from None
            finally:
                if cmd is not None:
                    _logout(cmd.ipmi_session)
                _forget_login(self.address, self._credentials)

        return call

    async def _run(self, operation: str, work: Callable[[Any], T], timeout: float | None = None) -> T:
        log.debug("BMC %s: %s", self.address, operation)
        try:
            _ensure_pyghmi()
        except UnsupportedPyghmi as err:
            raise UnsupportedPyghmi(f"{operation} on {self.address}: {err}", address=str(self.address), operation=operation) from None
        holder: list[Any] = []

        def abort() -> None:
            # Logging the session out ends pyghmi's wait loops for it ("Session no longer
            # connected"), so the thread, and with it the BMC's lock, is freed soon.
            for cmd in holder:
                _logout(cmd.ipmi_session, tell_bmc=False)

        return await self._executor.run(
            (self.address.host, self.address.port),
            self._session_call(operation, work, holder),
            timeout=timeout or self.timeout,
            describe=f"{operation} on {self.address}",
            on_timeout=abort,
        )

    # -- power -------------------------------------------------------------------------------
    # pyghmi's get_power / set_power. set_power reads the state first and sends nothing when
    # the host is already there, except for "shutdown", which it sends whatever the state.
    @staticmethod
    def _read_power(cmd: Any) -> PowerState:
        return PowerState(cmd.get_power()["powerstate"])

    async def power_state(self) -> PowerState:
        return await self._run("read power state", self._read_power)

    async def _power(self, operation: str, want: PowerState, request: str, wait: float) -> PowerState:
        from pyghmi import exceptions as pyghmi_exc

        def work(cmd: Any) -> PowerState:
            if request == "shutdown" and self._read_power(cmd) == want:
                return want  # soft off of a host that is off: nothing to ask the OS
            if "powerstate" in cmd.set_power(request):
                return want  # it already was; nothing was sent
            before = PowerState.OFF if want == PowerState.ON else PowerState.ON
            try:
                return self._read_power(cmd)
            except pyghmi_exc.IpmiException:
                # The command was accepted; a status read refused while the host changes
                # state is not a failure of the command. Report "not yet"; waiting polls.
                return before

        state = await self._run(operation, work)
        if wait > 0 and state != want:
            state = await self._wait_power(want, wait, operation)
        return state

    async def power_on(self, wait: float = 0) -> PowerState:
        return await self._power("power on", PowerState.ON, "on", wait)

    async def power_off(self, wait: float = 0) -> PowerState:
        return await self._power("power off", PowerState.OFF, "off", wait)

    async def soft_off(self, wait: float = 0) -> PowerState:
        return await self._power("soft power off", PowerState.OFF, "shutdown", wait)

    async def reset(self) -> PowerState:
        from pyghmi import exceptions as pyghmi_exc

        def work(cmd: Any) -> PowerState:
            cmd.set_power("boot")  # pyghmi: "on" when the host is off, else a hard reset
            try:
                return self._read_power(cmd)
            except pyghmi_exc.IpmiException:
                return PowerState.ON  # accepted; a status read refused while the host restarts is no failure

        return await self._run("reset", work)

    # pyghmi's Command has no Get Chassis Status beyond the power bit (get_power); the
    # faults, restore policy and last power event are decoded here (ChassisStatus.decode).
    async def chassis_status(self) -> ChassisStatus:
        def work(cmd: Any) -> ChassisStatus:
            rsp = cmd.raw_command(netfn=0x00, command=0x01)
            _raise_for_code(rsp, "get chassis status")
            return ChassisStatus.decode(bytes(rsp["data"]))

        return await self._run("read chassis status", work)

    # -- boot device -------------------------------------------------------------------------
    async def set_boot_device(self, device: BootDevice | str, *, persistent: bool = False, uefi: bool = False) -> None:
        try:
            dev = BootDevice.parse(device)
        except ValueError as err:
            raise CommandUnsupported(str(err), address=str(self.address), operation="set boot device") from None

        def work(cmd: Any) -> None:
            result = cmd.set_bootdev(_PYGHMI_BOOTDEV[dev], persist=persistent, uefiboot=uefi)
            if isinstance(result, dict) and result.get("error"):
                from pyghmi import exceptions as pyghmi_exc

                raise pyghmi_exc.IpmiException(result["error"])

        await self._run(f"set boot device {dev.value}", work)

    async def get_boot_device(self) -> BootDeviceInfo:
        # Not pyghmi's get_bootdev: it answers "default" whenever the BMC has cleared the
        # "valid" flag of boot parameter 5, which ipmi_sim never sets and real BMCs clear
        # after the next boot, so the device that was set could not be read back. The flag
        # is reported on its own (BootDeviceInfo.valid) instead.
        def work(cmd: Any) -> BootDeviceInfo:
            rsp = cmd.raw_command(netfn=0x00, command=0x09, data=(5, 0, 0))
            _raise_for_code(rsp, "get system boot options")
            data = bytes(rsp["data"])
            if len(data) < 4:
                from pyghmi import exceptions as pyghmi_exc

                raise pyghmi_exc.IpmiException("short boot options response")
            flags, selector = data[2], (data[3] >> 2) & 0x0F
            return BootDeviceInfo(
                device=_SELECTOR_BOOTDEV.get(selector),
                selector=selector,
                persistent=bool(flags & 0x40),
                uefi=bool(flags & 0x20),
                valid=bool(flags & 0x80),
            )

        return await self._run("read boot device", work)

    # -- identity and inventory --------------------------------------------------------------
    async def validate(self) -> BmcInfo:
        # Get Device ID: pyghmi reads it only privately (Command._get_device_id, for its OEM
        # detection) and without the IPMI version, so it is decoded here (BmcInfo.decode).
        def work(cmd: Any) -> BmcInfo:
            rsp = cmd.raw_command(netfn=0x06, command=0x01)
            _raise_for_code(rsp, "get device id")
            return BmcInfo.decode(bytes(rsp["data"]))

        return await self._run("validate credentials", work)

    async def inspect(self) -> InspectionResult:
        # Not pyghmi's get_inventory: see _read_fru and _sdr_records for why its FRU and SDR
        # readers fail on ipmi_sim (and on BMCs that cap reads the same way).
        return await self._run("inspect", _inspect, timeout=self.inspect_timeout)


def _read_fru(cmd: Any, fru_id: int) -> bytes | None:
    """Read a whole FRU with chunks that shrink on 'too long' codes; None if not present.

    pyghmi 1.6.19's reader (fru.FRU(ipmicmd=…)) starts at 224 bytes and shrinks only on
    completion codes 0xC9/0xCA; ipmi_sim caps reads at 34 bytes and answers 0xC8, so
    pyghmi raises "Request data field length limit exceeded" on FRU 0 and get_inventory
    fails as a whole. This reader shrinks on 0xC7-0xCA; pyghmi still decodes the bytes.
    """
    rsp = cmd.raw_command(netfn=0x0A, command=0x10, data=[fru_id])
    if rsp.get("code") in _FRU_ABSENT_CODES:
        return None
    _raise_for_code(rsp, f"get FRU {fru_id} info")
    data = bytes(rsp["data"])
    size = data[0] | (data[1] << 8)
    words = bool(data[2] & 0x01) if len(data) > 2 else False
    unit = 2 if words else 1
    chunk = getattr(cmd, "_stratus_fru_chunk", _FRU_FIRST_CHUNK)
    out = bytearray()
    offset = 0  # in access units
    busy = 0
    while offset * unit < size:
        count = min(chunk, size - offset * unit) // unit
        rsp = cmd.raw_command(netfn=0x0A, command=0x11, data=[fru_id, offset & 0xFF, offset >> 8, count])
        code = rsp.get("code") or 0
        if code in _FRU_SHRINK_CODES and chunk > _FRU_MIN_CHUNK:
            chunk = max(_FRU_MIN_CHUNK, chunk // 2)
            continue
        if code == 0x81 and busy < 5:  # FRU device busy
            busy += 1
            time.sleep(0.05)
            continue
        _raise_for_code(rsp, f"read FRU {fru_id}")
        payload = bytes(rsp["data"])
        returned = payload[0] if payload else 0
        if returned == 0:
            break
        out.extend(payload[1 : 1 + returned * unit])
        offset += returned
    cmd._stratus_fru_chunk = chunk  # remember what worked for the next FRU on this BMC
    return bytes(out)


@dataclasses.dataclass(frozen=True)
class FruLocator:
    """A FRU device locator SDR (type 0x11); pyghmi's FRU parser reads ``fru_type_and_modifier``."""

    fru_id: int
    name: str
    device_type: int
    modifier: int
    entity_id: int

    @property
    def fru_type_and_modifier(self) -> int:
        return (self.device_type << 8) | self.modifier


def _sdr_string(type_length: int, data: bytes) -> str:
    from pyghmi.ipmi import fru as ipmi_fru

    kind, size = type_length >> 6, type_length & 0x1F
    raw = bytes(data[:size])
    if kind == 3:
        return raw.decode("latin-1").replace("\x00", "").strip()
    if kind == 2:
        return ipmi_fru.unpack6bitascii(bytearray(raw)).strip()
    return raw.hex()


def _sdr_records(cmd: Any, limit: int = 2048) -> Iterable[bytes]:
    """Every record of the SDR repository, read header first, then the body in parts.

    pyghmi 1.6.19 reads whole records with "size 0xFF" and decodes whatever the BMC
    returns; ipmi_sim returns its record buffer with stale bytes after the record, which
    pyghmi then decodes into the record's name (get_inventory_descriptions() gives
    'CPU 2\\x00\\x00\\x007\\x01\\x00'). Reading exactly the announced length avoids it.
    """
    rsp = cmd.raw_command(netfn=0x0A, command=0x20)
    _raise_for_code(rsp, "get SDR repository info")
    reservation = 0
    chunk = 16
    record_id = 0
    seen: set[int] = set()

    def read(rid: int, offset: int, count: int) -> tuple[int, bytes]:
        nonlocal reservation, chunk
        for _ in range(8):
            if offset and not reservation:
                rsv = cmd.raw_command(netfn=0x0A, command=0x22)
                _raise_for_code(rsv, "reserve SDR repository")
                reservation = rsv["data"][0] | (rsv["data"][1] << 8)
            rsp = cmd.raw_command(
                netfn=0x0A,
                command=0x23,
                data=[reservation & 0xFF, reservation >> 8, rid & 0xFF, rid >> 8, offset, count],
            )
            code = rsp.get("code") or 0
            if code == 0xC5:  # reservation cancelled
                reservation = 0
                continue
            if code in _FRU_SHRINK_CODES and count > 4:
                chunk = count = max(4, count // 2)
                continue
            _raise_for_code(rsp, f"get SDR {rid}")
            data = bytes(rsp["data"])
            return data[0] | (data[1] << 8), data[2 : 2 + count]
        raise CommandFailed(f"SDR record {rid} could not be read")

    while record_id != 0xFFFF and record_id not in seen and len(seen) < limit:
        seen.add(record_id)
        next_id, header = read(record_id, 0, 5)
        body = bytearray()
        length = header[4] if len(header) >= 5 else 0
        while len(body) < length:
            want = min(chunk, length - len(body))
            _, part = read(record_id, 5 + len(body), want)
            if not part:
                break
            body.extend(part)
        yield bytes(header[:5]) + bytes(body)
        record_id = next_id


def _fru_locators(cmd: Any) -> Iterable[FruLocator]:
    for record in _sdr_records(cmd):
        if len(record) < 16 or record[3] != 0x11:
            continue
        body = record[5:]
        if not body[2] & 0x80:  # physical FRU on a private bus: not readable by FRU id
            continue
        yield FruLocator(
            fru_id=body[1],
            name=_sdr_string(body[10], body[11:]),
            device_type=body[5],
            modifier=body[6],
            entity_id=body[7],
        )


def _json_safe(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        text = raw.strip(b"\x00\xff ")
        if text and all(32 <= b < 127 for b in text):
            return text.decode()
        return raw.hex()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _text(value: Any) -> str | None:
    value = _json_safe(value)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _extras(info: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for key in ("product_extra", "board_extra", "chassis_extra"):
        for item in info.get(key) or ():
            text = _text(item)
            if text and "=" in text:
                k, v = text.split("=", 1)
                found[k.strip().lower()] = v.strip()
    return found


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip().split()[0])
    except (ValueError, IndexError, TypeError):
        return None


_CPU_NAME = re.compile(r"^(cpu|proc|processor|socket)\s*\d*", re.IGNORECASE)
_DIMM_NAME = re.compile(r"^(dimm|mem|memory)", re.IGNORECASE)


def _inspect(cmd: Any) -> InspectionResult:
    """Blocking: read identity, chassis status and every FRU (see the module docstring)."""
    from pyghmi.ipmi import fru as ipmi_fru
    from pyghmi.ipmi.private import util as ipmi_util

    notes: list[str] = []
    rsp = cmd.raw_command(netfn=0x06, command=0x01)
    _raise_for_code(rsp, "get device id")
    bmc = BmcInfo.decode(bytes(rsp["data"]))
    rsp = cmd.raw_command(netfn=0x00, command=0x01)
    _raise_for_code(rsp, "get chassis status")
    chassis = ChassisStatus.decode(bytes(rsp["data"]))
    system_uuid = None
    rsp = cmd.raw_command(netfn=0x06, command=0x37)
    if not rsp.get("code") and len(rsp.get("data", b"")) >= 16:
        system_uuid = ipmi_util.decode_wireformat_uuid(bytes(rsp["data"][:16]))
    else:
        notes.append("system GUID not available")

    components: dict[str, dict[str, Any]] = {}
    system = {}
    raw = _read_fru(cmd, 0)
    if raw:
        try:
            system = ipmi_fru.FRU(rawdata=raw).info or {}
        except Exception as err:  # noqa: BLE001 - a malformed FRU is reported, not fatal
            notes.append(f"FRU 0 unreadable: {err}")
    else:
        notes.append("no system FRU (FRU 0)")
    if system:
        components["System"] = _json_safe(system)

    cpus: list[CpuInfo] = []
    memory: list[MemoryModule] = []
    locators: dict[int, FruLocator] = {}
    try:
        for locator in _fru_locators(cmd):
            if locator.fru_id != 0:
                locators.setdefault(locator.fru_id, locator)
    except Exception as err:  # noqa: BLE001 - FRU 0 is still worth reporting
        notes.append(f"SDR repository unreadable ({_text(str(err)) or type(err).__name__}); only FRU 0 inspected")
    for fru_id in sorted(locators):
        entry = locators[fru_id]
        name = entry.name or f"FRU {fru_id}"
        try:
            data = _read_fru(cmd, fru_id)
        except Exception as err:  # noqa: BLE001
            notes.append(f"{name}: unreadable ({type(err).__name__})")
            continue
        if not data:
            continue  # empty slot
        try:
            info = ipmi_fru.FRU(rawdata=data, sdr=entry).info or {}
        except Exception as err:  # noqa: BLE001
            notes.append(f"{name}: undecodable ({type(err).__name__})")
            continue
        if not info:
            continue
        components[name] = _json_safe(info)
        if "memory_type" in info or _DIMM_NAME.match(name):
            size = info.get("capacity_mb")
            speed = info.get("speed")
            memory.append(
                MemoryModule(
                    name=name,
                    size_mib=int(size) if isinstance(size, (int, float)) and size else None,
                    memory_type=_text(info.get("memory_type")),
                    module_type=_text(info.get("module_type")),
                    speed_mts=_ddr_rate(speed),
                    manufacturer=_text(info.get("manufacturer")),
                    serial=_text(info.get("serial")),
                    part_number=_text(info.get("model")),
                )
            )
        elif _CPU_NAME.match(name):
            extra = _extras(info)
            cpus.append(
                CpuInfo(
                    name=name,
                    manufacturer=_text(info.get("Manufacturer") or info.get("Board manufacturer")),
                    model=_text(info.get("Product name") or info.get("Board product name")),
                    cores=_int(extra.get("cores")),
                    threads=_int(extra.get("threads")),
                    speed_mhz=_int(extra.get("speed_mhz")),
                )
            )
    if not cpus:
        notes.append("no CPU inventory over standard IPMI (needs vendor OEM commands or in-band inspection)")
    if not memory:
        notes.append("no DIMM FRU/SPD records")

    def pick(*keys: str) -> str | None:
        for key in keys:
            value = _text(system.get(key))
            if value:
                return value
        return None

    return InspectionResult(
        chassis=chassis,
        bmc=bmc,
        system_uuid=system_uuid,
        manufacturer=pick("Manufacturer", "Board manufacturer"),
        product=pick("Product name", "Board product name"),
        model=pick("Model", "Board model"),
        serial=pick("Serial Number", "Board serial number", "Chassis serial number"),
        asset_tag=pick("Asset Number"),
        board={
            "manufacturer": pick("Board manufacturer"),
            "product": pick("Board product name"),
            "serial": pick("Board serial number"),
            "partNumber": pick("Board model"),
        },
        cpus=tuple(cpus),
        memory=tuple(memory),
        components=components,
        notes=tuple(notes),
    )


def _ddr_rate(speed: Any) -> int | None:
    """pyghmi reports SPD speed as the PC module rate (PC4-25600); return MT/s (3200)."""
    if isinstance(speed, (int, float)) and speed:
        return int(round(speed / 8 / 100.0) * 100) if speed > 10000 else int(speed)
    return None


register_scheme("ipmi", IpmiClient)


__all__ = [
    "AuthenticationFailed",
    "BmcAddress",
    "BmcClient",
    "BmcCredentials",
    "BmcError",
    "BmcInfo",
    "BmcUnreachable",
    "BootDevice",
    "BootDeviceInfo",
    "ChassisStatus",
    "CommandFailed",
    "CommandUnsupported",
    "CpuInfo",
    "InspectionResult",
    "InvalidAddress",
    "IpmiClient",
    "IpmiExecutor",
    "MemoryModule",
    "PowerState",
    "PowerStateTimeout",
    "classify_error",
    "connect",
    "parse_address",
    "register_scheme",
    "supported_schemes",
]

