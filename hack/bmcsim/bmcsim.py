#!/usr/bin/env python3
"""Simulated BMCs for tests and benchmarks: N OpenIPMI `ipmi_sim` processes on loopback.

Each simulated BMC is a real IPMI 2.0 (RMCP+) endpoint: Debian's `openipmi` package provides
`ipmi_sim`, and `chassis.py` next to this file is its chassis-control program, holding the
machine's power and boot device in the BMC's state directory. Clients talk to it with the real
protocol (pyghmi, ipmitool); nothing here is a mock.

Library use (pytest fixtures, benchmarks)::

    fleet = BmcFleet.create(directory, count=3)          # free loopback ports are chosen
    fleet.start()                                        # parallel start, waits until they answer
    bmc = fleet[0]
    bmc.address, bmc.username, bmc.password              # "ipmi://127.0.0.1:16241", ...
    bmc.power, bmc.boot_device, bmc.read_state()         # the chassis state, read from disk
    bmc.stop(); bmc.start()                              # a BMC outage, the host keeps power
    fleet.stop()

Command line::

    python hack/bmcsim/bmcsim.py up --count 3 --base-port 16241 --dir DIR
    python hack/bmcsim/bmcsim.py status --dir DIR
    python hack/bmcsim/bmcsim.py down --dir DIR

Design decisions
----------------
* One directory per BMC (`DIR/bmc-N/`) holds its generated `lan.conf` and `sim.emu` (from the
  templates in `templates/`), the chassis state (`chassis.json`, `chassis.log`), ipmi_sim's own
  persistent data and its log. Everything is regenerated on every start, except the chassis
  state, which survives a BMC restart as it would on real hardware.
* Every BMC listens on 127.0.0.1 on its own UDP port, with its own user name and password
  (16 random hex digits per BMC unless given; IPMI 2.0 allows 20 characters, but ipmi_sim's
  config parser keeps only 19, a 20-character password never matches). The
  passwords are written to `fleet.json` (mode 0600) for CLI users.
* ipmitool reaches these BMCs with `-I lanplus -C 3` (see `SimulatedBmc.ipmitool_args`).
* Readiness is an RMCP/ASF presence ping (a single UDP datagram answered by the BMC's LAN
  stack), sent to all ports from one socket: starting 100 BMCs costs 100 fork/execs and a few
  round trips, no IPMI session per BMC.
* ipmi_sim is made a child subreaper (prctl) before exec, so machine processes started by the
  chassis program are re-parented to it and reaped by its SIGCHLD handler. ipmi_sim is started
  in its own process group, and each machine in another; stopping a BMC kills the machine's
  group first (while ipmi_sim can still reap it), then sends SIGTERM to ipmi_sim and waits.
* In library mode the calling process owns (and reaps) the ipmi_sim processes. The CLI's `up`
  cannot, since it exits: it starts a small supervisor (`bmcsim.py serve`, detached, logging
  to `DIR/supervisor.log`) that owns the fleet until `down` sends it SIGTERM.
* Inventory: FRU device 0 carries chassis, board and product areas (manufacturer, product,
  serial); each CPU is a FRU in the standard format (product area: manufacturer, model string,
  part number, and `cores=`/`threads=`/`speed_mhz=` custom fields) and each DIMM a DDR4 SPD
  image, both announced by FRU device locator records in the SDR repository, which is how real
  BMCs expose DIMMs. IPMI has no standard CPU inventory; the CPU FRUs are a convention of this
  simulator (some vendors do publish "CPU n" FRUs). The product id encodes the CPU and DIMM
  counts, so clients that cache SDRs per product (pyghmi does) never mix layouts.
* ipmi_sim caps FRU reads at 34 bytes per request: clients must read in small chunks (the
  Stratus IPMI driver adapts its chunk size on completion codes 0xC7-0xCA).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHASSIS_PROGRAM = HERE / "chassis.py"
TEMPLATES = HERE / "templates"
MANIFEST = "fleet.json"
SUPERVISOR_PID = "supervisor.pid"
LOOPBACK = "127.0.0.1"
DEFAULT_BASE_PORT = 16241
# IANA enterprise number 0x1291 is what OpenIPMI's own examples use for simulated MCs.
MANUFACTURER_ID = 0x1291


class BmcSimError(RuntimeError):
    """A simulator could not be started or stopped."""


def ipmi_sim_binary() -> str:
    path = shutil.which("ipmi_sim") or ("/usr/bin/ipmi_sim" if os.path.exists("/usr/bin/ipmi_sim") else None)
    if not path:
        raise BmcSimError("ipmi_sim not found: install the Debian package 'openipmi' (see hack/debian-packages.txt)")
    return path


# --------------------------------------------------------------------------------------------
# Hardware description and its IPMI encodings (FRU areas, DDR4 SPD, FRU locator SDRs)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CpuSpec:
    manufacturer: str = "Intel(R) Corporation"
    model: str = "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    part_number: str = "6338"
    cores: int = 32
    threads: int = 64
    speed_mhz: int = 2000


@dataclasses.dataclass(frozen=True)
class DimmSpec:
    size_gib: int = 16  # one of 8, 16, 32, 64
    speed_mts: int = 3200  # one of 2400, 2666, 2933, 3200
    part_number: str = "M393A2K43DB3-CWE"


@dataclasses.dataclass(frozen=True)
class Hardware:
    manufacturer: str = "Stratus Simulated Systems"
    product: str = "SimServer 2U"
    model: str = "SS-2U-1"
    serial: str = "SIM00000"
    board_serial: str = "SIMBRD00000"
    chassis_serial: str = "SIMCH00000"
    asset_tag: str = ""
    cpus: tuple[CpuSpec, ...] = (CpuSpec(), CpuSpec())
    dimms: tuple[DimmSpec, ...] = (DimmSpec(), DimmSpec(), DimmSpec(), DimmSpec())

    @classmethod
    def for_index(cls, index: int, cpus: int = 2, dimms: int = 4) -> Hardware:
        return cls(
            serial=f"SIM{index:05d}",
            board_serial=f"SIMBRD{index:05d}",
            chassis_serial=f"SIMCH{index:05d}",
            asset_tag=f"rack1-u{index}",
            cpus=tuple(CpuSpec() for _ in range(cpus)),
            dimms=tuple(DimmSpec() for _ in range(dimms)),
        )

    @property
    def product_id(self) -> int:
        return 0x4000 | (min(len(self.cpus), 0x3F) << 8) | min(len(self.dimms), 0xFF)

    @property
    def memory_mib(self) -> int:
        return sum(d.size_gib for d in self.dimms) * 1024


def _tl(text: str) -> bytes:
    """A FRU type/length byte (8-bit ASCII) and the text."""
    data = text.encode("latin-1")[:63]
    return bytes([0xC0 | len(data)]) + data


def _fru_area(body: bytes) -> bytes:
    """Close a FRU info area: end marker, pad to 8 bytes, length byte, zero checksum."""
    area = bytearray(body) + b"\xc1"
    while (len(area) + 1) % 8:
        area.append(0)
    area[1] = (len(area) + 1) // 8
    area.append((-sum(area)) & 0xFF)
    return bytes(area)


def fru_image(
    *,
    manufacturer: str,
    product: str,
    model: str = "",
    version: str = "",
    serial: str = "",
    asset_tag: str = "",
    custom: Sequence[str] = (),
    board: tuple[str, str, str, str] | None = None,
    chassis: tuple[str, str] | None = None,
) -> bytes:
    """A FRU image per the IPMI Platform Management FRU Information Storage Definition 1.0.

    board = (manufacturer, product, serial, part number); chassis = (part number, serial).
    """
    areas: list[bytes] = []
    offsets = [0, 0, 0]  # chassis, board, product (in 8-byte units)
    position = 1
    if chassis is not None:
        # 0x17: rack mount chassis.
        areas.append(_fru_area(b"\x01\x00\x17" + _tl(chassis[0]) + _tl(chassis[1])))
        offsets[0] = position
        position += len(areas[-1]) // 8
    if board is not None:
        minutes = 0  # manufacturing date unspecified
        body = b"\x01\x00\x00" + minutes.to_bytes(3, "little")
        body += b"".join(_tl(x) for x in board) + _tl("")
        areas.append(_fru_area(body))
        offsets[1] = position
        position += len(areas[-1]) // 8
    body = b"\x01\x00\x00" + b"".join(_tl(x) for x in (manufacturer, product, model, version, serial, asset_tag, ""))
    body += b"".join(_tl(x) for x in custom)
    areas.append(_fru_area(body))
    offsets[2] = position
    header = bytearray([0x01, 0x00, offsets[0], offsets[1], offsets[2], 0x00, 0x00])
    header.append((-sum(header)) & 0xFF)
    return bytes(header) + b"".join(areas)


_DDR4_GEOMETRY = {  # size GiB -> (die density code, device width code, ranks)
    8: (0x5, 0x1, 1),  # 8 Gb dies, x8, one rank
    16: (0x5, 0x1, 2),  # 8 Gb dies, x8, two ranks
    32: (0x6, 0x1, 2),  # 16 Gb dies, x8, two ranks
    64: (0x6, 0x0, 2),  # 16 Gb dies, x4, two ranks
}
_DDR4_TCK_MTB = {2400: 7, 2666: 6, 2933: 5, 3200: 5}  # tCKmin in 125 ps units
_DDR4_TCK_FINE = {2400: 0xD6, 2666: 0, 2933: 0x13, 3200: 0}  # signed 1 ps correction


def ddr4_spd(dimm: DimmSpec, serial: int) -> bytes:
    """A 512-byte DDR4 RDIMM SPD image (JEDEC 21-C 4.1.2.L) with the fields inventories read."""
    if dimm.size_gib not in _DDR4_GEOMETRY:
        raise ValueError(f"DIMM size {dimm.size_gib} GiB not one of {sorted(_DDR4_GEOMETRY)}")
    density, width, ranks = _DDR4_GEOMETRY[dimm.size_gib]
    spd = bytearray(512)
    spd[0] = 0x23  # 384 bytes used, 512 total
    spd[1] = 0x11  # SPD revision 1.1
    spd[2] = 0x0C  # DDR4 SDRAM
    spd[3] = 0x01  # RDIMM
    spd[4] = 0x80 | density  # 2 bank groups bits + density
    spd[5] = 0x21 if density == 0x6 else 0x19  # row/column address bits
    spd[6] = 0x00  # monolithic package
    spd[12] = ((ranks - 1) << 3) | width
    spd[13] = 0x0B  # 64-bit primary bus + 8-bit ECC
    spd[17] = 0x00  # medium/fine timebase 125 ps / 1 ps
    spd[18] = _DDR4_TCK_MTB[dimm.speed_mts]
    spd[125] = _DDR4_TCK_FINE[dimm.speed_mts]
    spd[320], spd[321] = 0x80, 0xCE  # module manufacturer: Samsung (bank 1, with parity)
    spd[322] = 0x01  # manufacturing location
    spd[323], spd[324] = 0x24, 0x10  # 2024, week 10 (BCD)
    spd[325:329] = serial.to_bytes(4, "big")
    spd[329:349] = dimm.part_number.encode()[:20].ljust(20, b" ")
    return bytes(spd)


def fru_locator_sdr(fru_id: int, name: str, *, spd: bool, entity: int) -> bytes:
    """A FRU device locator SDR (type 0x11) for a logical FRU on the BMC at 0x20."""
    label = name.encode()[:16]
    body = bytes(
        [
            0x20,  # device access address
            fru_id,  # FRU device id
            0x80,  # logical FRU device, LUN 0, private bus 0
            0x00,  # channel 0
            0x00,  # reserved
            0x10,  # device type: FRU inventory device behind a management controller
            0x01 if spd else 0x00,  # modifier: DIMM memory id (SPD) / IPMI FRU inventory
            entity,  # entity id: 0x03 processor, 0x20 memory device
            fru_id,  # entity instance
            0x00,  # OEM
            0xC0 | len(label),
        ]
    ) + label
    return bytes([0x00, 0x00, 0x51, 0x11, len(body)]) + body


def inventory_commands(hw: Hardware) -> str:
    """ipmi_sim commands adding the FRU images and the FRU locator records for `hw`."""

    def hexbytes(data: bytes) -> str:
        return " ".join(f"0x{b:02x}" for b in data)

    lines = []
    system = fru_image(
        manufacturer=hw.manufacturer,
        product=hw.product,
        model=hw.model,
        version="1.0",
        serial=hw.serial,
        asset_tag=hw.asset_tag,
        board=(hw.manufacturer, f"{hw.product} mainboard", hw.board_serial, f"{hw.model}-MB"),
        chassis=(f"{hw.model}-CH", hw.chassis_serial),
    )
    lines.append(f"mc_add_fru_data 0x20 0 0x{len(system):x} data {hexbytes(system)}")
    fru_id = 1
    for n, cpu in enumerate(hw.cpus, start=1):
        image = fru_image(
            manufacturer=cpu.manufacturer,
            product=cpu.model,
            model=cpu.part_number,
            serial=f"{hw.serial}-CPU{n}",
            custom=(f"cores={cpu.cores}", f"threads={cpu.threads}", f"speed_mhz={cpu.speed_mhz}"),
        )
        lines.append(f"mc_add_fru_data 0x20 0x{fru_id:x} 0x{len(image):x} data {hexbytes(image)}")
        lines.append(f"main_sdr_add 0x20 {hexbytes(fru_locator_sdr(fru_id, f'CPU {n}', spd=False, entity=0x03))}")
        fru_id += 1
    for n, dimm in enumerate(hw.dimms, start=1):
        serial = (int("".join(c for c in hw.serial if c.isdigit()) or "0") << 8 | n) & 0xFFFFFFFF
        image = ddr4_spd(dimm, serial)
        lines.append(f"mc_add_fru_data 0x20 0x{fru_id:x} 0x{len(image):x} data {hexbytes(image)}")
        lines.append(f"main_sdr_add 0x20 {hexbytes(fru_locator_sdr(fru_id, f'DIMM {n}', spd=True, entity=0x20))}")
        fru_id += 1
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# One simulated BMC
# --------------------------------------------------------------------------------------------


def _set_child_subreaper() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER, kept across execve
    except Exception:  # noqa: BLE001 - best effort: without it, killed machines may linger as zombies
        pass


def _alive(pid: int | None) -> bool:
    """True for a live process; zombies count as dead."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return False
    return raw[raw.rindex(")") + 2 :].split()[0] not in ("Z", "X")


def _kill_group(pid: int) -> None:
    """SIGKILL a machine's process group (it leads one), or the process alone."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclasses.dataclass
class SimulatedBmc:
    """One ipmi_sim process with its own port, credentials and state directory."""

    name: str
    index: int
    port: int
    username: str
    password: str
    state_dir: Path
    host: str = LOOPBACK
    hardware: Hardware = dataclasses.field(default_factory=Hardware)
    machine: list[str] | None | bool = True  # True: default sleep; None/False: no process; list: argv
    process: subprocess.Popen | None = dataclasses.field(default=None, repr=False)
    pid: int | None = None  # set when the process is owned by another process (CLI manifest)

    # --- addressing -------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"ipmi://{self.host}:{self.port}"

    def ipmitool_args(self) -> list[str]:
        """Arguments for `ipmitool` to reach this BMC (the password goes in IPMI_PASSWORD, -E).

        `-C 3` (HMAC-SHA1, AES-128): ipmitool's default suite 17 (SHA-256) is not offered by
        ipmi_sim, and without -C ipmitool first waits ~10 s for a cipher-suite query to fail.
        """
        return ["-I", "lanplus", "-C", "3", "-H", self.host, "-p", str(self.port), "-U", self.username, "-E"]

    def ipmitool(self, *command: str, timeout: float = 20.0, check: bool = True) -> str:
        """Run ipmitool against this BMC and return its standard output."""
        env = dict(os.environ, IPMI_PASSWORD=self.password)
        proc = subprocess.run(
            ["ipmitool", *self.ipmitool_args(), *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if check and proc.returncode != 0:
            raise BmcSimError(f"ipmitool {' '.join(command)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    # --- files ------------------------------------------------------------------------------
    def write_config(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        chassis_command = f"{sys.executable} -I -S {CHASSIS_PROGRAM} {self.state_dir}"
        if any(c in str(self.state_dir) + sys.executable for c in ' "\'\\$'):
            raise BmcSimError(f"paths with spaces or quotes are not supported: {self.state_dir}")
        values = {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "guid": secrets.token_hex(16) if not (self.state_dir / "lan.conf").exists() else self._old_guid(),
            "chassis_command": chassis_command,
            "username": self.username,
            "password": self.password,
            "manufacturer_id": f"0x{MANUFACTURER_ID:x}",
            "product_id": f"0x{self.hardware.product_id:x}",
            "fru_commands": inventory_commands(self.hardware),
        }
        for template, target in (("lan.conf.in", "lan.conf"), ("sim.emu.in", "sim.emu")):
            text = string.Template((TEMPLATES / template).read_text()).substitute(values)
            path = self.state_dir / target
            path.write_text(text)
            path.chmod(0o600)
        machine: dict = {"name": self.name}
        if self.machine is None or self.machine is False:
            machine["machine"] = None
        elif isinstance(self.machine, list):
            machine["machine"] = self.machine
        (self.state_dir / "machine.json").write_text(json.dumps(machine))
        # ipmi_sim persists the SDR repository; the command file re-adds every record.
        shutil.rmtree(self.state_dir / "ipmi_sim", ignore_errors=True)

    def _old_guid(self) -> str:
        for line in (self.state_dir / "lan.conf").read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["guid"] and len(parts) == 2:
                return parts[1]
        return secrets.token_hex(16)

    def read_state(self) -> dict:
        """The chassis state as the chassis program last wrote it (power, boot, boot_count...)."""
        try:
            return json.loads((self.state_dir / "chassis.json").read_text())
        except FileNotFoundError:
            return {"power": 0, "boot": "none", "boot_count": 0}

    @property
    def power(self) -> bool:
        """Power as stored by the chassis program (may lag a machine that died on its own)."""
        return bool(self.read_state().get("power"))

    @property
    def boot_device(self) -> str:
        return self.read_state().get("boot", "none")

    @property
    def machine_pid(self) -> int | None:
        pid = self.read_state().get("machine_pid")
        return pid if _alive(pid) else None

    def events(self) -> list[str]:
        try:
            return (self.state_dir / "chassis.log").read_text().splitlines()
        except FileNotFoundError:
            return []

    def set_fault(self, *params: str) -> None:
        """Make the chassis refuse `set` of these parameters (power, boot, reset, shutdown, all)."""
        path = self.state_dir / "fault"
        if params:
            path.write_text("\n".join(params) + "\n")
        else:
            path.unlink(missing_ok=True)

    # --- process ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return _alive(self.pid)

    def launch(self) -> None:
        """Start ipmi_sim without waiting for it to answer (see `wait_ready`)."""
        if self.running:
            return
        self.write_config()
        log = open(self.state_dir / "sim.log", "ab")
        try:
            self.process = subprocess.Popen(
                [
                    ipmi_sim_binary(),
                    "-c",
                    str(self.state_dir / "lan.conf"),
                    "-f",
                    str(self.state_dir / "sim.emu"),
                    "-n",
                    "-s",
                    str(self.state_dir),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,
                preexec_fn=_set_child_subreaper,
            )
        finally:
            log.close()
        self.pid = self.process.pid

    def start(self, timeout: float = 10.0) -> None:
        self.launch()
        wait_ready([self], timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the BMC. The host keeps its power state; its machine process is ended."""
        pid = self.process.pid if self.process is not None else self.pid
        state = self.read_state()
        machine = state.get("machine_pid")
        if _alive(machine):
            _kill_group(machine)
            deadline = time.monotonic() + 1.0  # let ipmi_sim reap it
            while _alive(machine) and time.monotonic() < deadline:
                time.sleep(0.01)
            if state.get("power"):
                state.update(machine_pid=None, machine_start=None, machine_detached=True)
                tmp = self.state_dir / "chassis.json.stop.tmp"
                tmp.write_text(json.dumps(state, sort_keys=True))
                os.replace(tmp, self.state_dir / "chassis.json")
        if pid and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process is not None:
                    if self.process.poll() is not None:
                        break
                elif not _alive(pid):
                    break
                time.sleep(0.01)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                if self.process is not None:
                    self.process.wait(timeout)
        self.process = None
        self.pid = None

    def to_manifest(self) -> dict:
        return {
            "name": self.name,
            "index": self.index,
            "address": self.address,
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "state_dir": str(self.state_dir),
            "pid": self.process.pid if self.process is not None else self.pid,
        }


# --------------------------------------------------------------------------------------------
# Readiness: RMCP presence ping
# --------------------------------------------------------------------------------------------


def _presence_ping(tag: int) -> bytes:
    # RMCP header (version 6, reserved, sequence 0xFF = no ack, class 6 = ASF), then the ASF
    # header: IANA 4542, message type 0x80 (presence ping), tag, reserved, data length 0.
    return bytes([0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x80, tag & 0xFF, 0x00, 0x00])


def wait_ready(bmcs: Sequence[SimulatedBmc], timeout: float = 20.0) -> None:
    """Wait until every BMC answers an RMCP presence ping; raise naming those that do not."""
    pending = {(b.host, b.port): b for b in bmcs}
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(0.05)
        while pending:
            for bmc in list(pending.values()):
                if bmc.process is not None and bmc.process.poll() is not None:
                    log = (bmc.state_dir / "sim.log").read_text(errors="replace")[-2000:]
                    raise BmcSimError(f"{bmc.name}: ipmi_sim exited with {bmc.process.returncode}:\n{log}")
                with contextlib.suppress(OSError):  # ECONNREFUSED from an earlier ping
                    sock.sendto(_presence_ping(bmc.index), (bmc.host, bmc.port))
            until = min(deadline, time.monotonic() + 0.2)
            while pending and time.monotonic() < until:
                try:
                    data, peer = sock.recvfrom(512)
                except (TimeoutError, socket.timeout, ConnectionRefusedError):
                    continue
                except OSError:
                    continue
                if len(data) >= 9 and data[3] == 0x06 and data[8] == 0x40:  # presence pong
                    pending.pop((peer[0], peer[1]), None)
            if pending and time.monotonic() >= deadline:
                names = ", ".join(sorted(b.name for b in pending.values()))
                raise BmcSimError(f"BMC simulators not answering after {timeout:.0f}s: {names}")


# --------------------------------------------------------------------------------------------
# A fleet of BMCs
# --------------------------------------------------------------------------------------------


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def find_free_base_port(count: int, start: int = DEFAULT_BASE_PORT, end: int = 40000) -> int:
    """The first port P >= start with P..P+count-1 free on loopback UDP."""
    port = start
    while port + count <= end:
        busy = next((p for p in range(port, port + count) if not port_is_free(p)), None)
        if busy is None:
            return port
        port = busy + 1
    raise BmcSimError(f"no {count} consecutive free UDP ports in {start}-{end}")


class BmcFleet:
    """N simulated BMCs sharing a parent directory."""

    def __init__(self, directory: Path, bmcs: list[SimulatedBmc]):
        self.directory = Path(directory)
        self.bmcs = bmcs

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike,
        count: int,
        *,
        base_port: int | None = None,
        username: str = "admin",
        password: str | None = None,
        machine: list[str] | None | bool = True,
        cpus: int = 2,
        dimms: int = 4,
    ) -> BmcFleet:
        """Describe `count` BMCs in `directory` (nothing starts yet).

        base_port None picks free consecutive ports. password None gives each BMC its own
        random password; a string may hold "{index}" to derive one per BMC.
        """
        directory = Path(directory).resolve()
        if base_port is None:
            base_port = find_free_base_port(count)
        bmcs = []
        for index in range(count):
            pw = secrets.token_hex(8) if password is None else password.format(index=index)
            if len(pw) > 19:
                raise BmcSimError("ipmi_sim accepts passwords of at most 19 characters")
            bmcs.append(
                SimulatedBmc(
                    name=f"bmc-{index}",
                    index=index,
                    port=base_port + index,
                    username=username.format(index=index),
                    password=pw,
                    state_dir=directory / f"bmc-{index}",
                    hardware=Hardware.for_index(index, cpus=cpus, dimms=dimms),
                    machine=machine,
                )
            )
        return cls(directory, bmcs)

    def __len__(self) -> int:
        return len(self.bmcs)

    def __getitem__(self, index: int) -> SimulatedBmc:
        return self.bmcs[index]

    def __iter__(self) -> Iterator[SimulatedBmc]:
        return iter(self.bmcs)

    def __enter__(self) -> BmcFleet:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> float:
        """Start all BMCs in parallel; returns the seconds it took until all answered."""
        began = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            for bmc in self.bmcs:
                bmc.launch()
            wait_ready(self.bmcs, timeout)
        except BaseException:
            self.stop()
            raise
        self.write_manifest()
        return time.monotonic() - began

    def stop(self) -> None:
        """Stop every BMC: machines first, then all ipmi_sim processes at once, then wait."""
        errors = []
        # Kill machines and signal every simulator before waiting for any, so 100 stop quickly.
        for bmc in self.bmcs:
            try:
                state = bmc.read_state()
                if _alive(state.get("machine_pid")):
                    _kill_group(state["machine_pid"])
            except Exception as err:  # noqa: BLE001
                errors.append(err)
        time.sleep(0.05 if any(b.running for b in self.bmcs) else 0)
        for bmc in self.bmcs:
            try:
                bmc.stop()
            except Exception as err:  # noqa: BLE001
                errors.append(err)
        if errors:
            raise BmcSimError(f"errors while stopping simulators: {errors}")

    def write_manifest(self) -> Path:
        path = self.directory / MANIFEST
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"bmcs": [b.to_manifest() for b in self.bmcs]}, indent=2))
        tmp.chmod(0o600)
        os.replace(tmp, path)
        return path

    @classmethod
    def from_manifest(cls, directory: str | os.PathLike) -> BmcFleet:
        directory = Path(directory).resolve()
        data = json.loads((directory / MANIFEST).read_text())
        bmcs = [
            SimulatedBmc(
                name=b["name"],
                index=b["index"],
                port=b["port"],
                username=b["username"],
                password=b["password"],
                state_dir=Path(b["state_dir"]),
                host=b.get("host", LOOPBACK),
                pid=b.get("pid"),
            )
            for b in data["bmcs"]
        ]
        return cls(directory, bmcs)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    """The supervisor behind `up`: owns the fleet until SIGTERM/SIGINT."""
    directory = Path(args.dir).resolve()
    config = json.loads((directory / "fleet-config.json").read_text())
    fleet = BmcFleet.create(directory, **config)
    stop = {"now": False}

    def _stop(signum, frame):  # noqa: ARG001
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        took = fleet.start(timeout=args.timeout)
    except Exception as err:  # noqa: BLE001
        (directory / "failed").write_text(str(err))
        return 1
    (directory / "ready").write_text(f"{took:.3f}\n")
    while not stop["now"]:
        signal.pause() if hasattr(signal, "pause") else time.sleep(1)
    fleet.stop()
    for name in ("ready", SUPERVISOR_PID):
        (directory / name).unlink(missing_ok=True)
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    pidfile = directory / SUPERVISOR_PID
    if pidfile.exists() and _alive(int(pidfile.read_text() or 0)):
        print(f"simulators already running in {directory}; run 'down' first", file=sys.stderr)
        return 1
    for name in ("ready", "failed"):
        (directory / name).unlink(missing_ok=True)
    config = {
        "count": args.count,
        "base_port": args.base_port,
        "username": args.username,
        "password": args.password,
        "machine": None if args.no_machine else True,
        "cpus": args.cpus,
        "dimms": args.dimms,
    }
    (directory / "fleet-config.json").write_text(json.dumps(config))
    began = time.monotonic()
    with open(directory / "supervisor.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "serve", "--dir", str(directory), "--timeout", str(args.timeout)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pidfile.write_text(str(proc.pid))
    while True:
        if (directory / "ready").exists():
            break
        if (directory / "failed").exists() or proc.poll() is not None:
            reason = (directory / "failed").read_text() if (directory / "failed").exists() else "supervisor exited"
            print(f"starting simulators failed: {reason}", file=sys.stderr)
            pidfile.unlink(missing_ok=True)
            return 1
        time.sleep(0.02)
    took = time.monotonic() - began
    fleet = BmcFleet.from_manifest(directory)
    print(f"{len(fleet)} BMC simulators up in {took:.2f}s; manifest {directory / MANIFEST}")
    if not args.quiet:
        for bmc in fleet:
            print(f"  {bmc.name:10} {bmc.address:24} user {bmc.username}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    pidfile = directory / SUPERVISOR_PID
    pid = int(pidfile.read_text() or 0) if pidfile.exists() else 0
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    # Whatever is still running (a supervisor that died, a timeout) is stopped directly.
    if (directory / MANIFEST).exists():
        fleet = BmcFleet.from_manifest(directory)
        leftovers = [b for b in fleet if b.running]
        if leftovers:
            BmcFleet(directory, leftovers).stop()
    pidfile.unlink(missing_ok=True)
    (directory / "ready").unlink(missing_ok=True)
    print(f"BMC simulators in {directory} stopped")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    if not (directory / MANIFEST).exists():
        print(f"no simulators in {directory}")
        return 1
    fleet = BmcFleet.from_manifest(directory)
    for bmc in fleet:
        state = bmc.read_state()
        print(
            f"{bmc.name:10} {bmc.address:24} {'up' if bmc.running else 'down':4} "
            f"power {'on' if state.get('power') else 'off':3} boot {state.get('boot', 'none'):7} "
            f"boots {state.get('boot_count', 0)}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bmcsim", description="Simulated IPMI BMCs (OpenIPMI ipmi_sim) on loopback")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start N simulators in the background")
    up.add_argument("--count", type=int, default=1)
    up.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT)
    up.add_argument("--dir", required=True)
    up.add_argument("--username", default="admin")
    up.add_argument("--password", default=None, help='one password for all, may hold "{index}"; default random per BMC')
    up.add_argument("--no-machine", action="store_true", help="no machine process per powered-on host")
    up.add_argument("--cpus", type=int, default=2)
    up.add_argument("--dimms", type=int, default=4)
    up.add_argument("--timeout", type=float, default=60.0)
    up.add_argument("--quiet", action="store_true")
    up.set_defaults(func=_cmd_up)
    down = sub.add_parser("down", help="stop the simulators started by 'up'")
    down.add_argument("--dir", required=True)
    down.add_argument("--timeout", type=float, default=30.0)
    down.set_defaults(func=_cmd_down)
    status = sub.add_parser("status", help="list the simulators and their chassis state")
    status.add_argument("--dir", required=True)
    status.set_defaults(func=_cmd_status)
    serve = sub.add_parser("serve", help=argparse.SUPPRESS)
    serve.add_argument("--dir", required=True)
    serve.add_argument("--timeout", type=float, default=60.0)
    serve.set_defaults(func=_cmd_serve)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
