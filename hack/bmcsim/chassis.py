#!/usr/bin/env python3
"""Chassis-control program for OpenIPMI's `ipmi_sim`: the simulated machine behind a BMC.

`ipmi_sim` runs the program named by `chassis_control "PROG ARGS"` in lan.conf for every
chassis command it receives (through popen, so through `sh -c`), appending one operation:

    PROG STATE_DIR get power boot            -> prints "power:1" and "boot:pxe", one a line
    PROG STATE_DIR set power "1" boot "pxe"  -> prints nothing, exit 0 on success
    PROG STATE_DIR check ...                 -> not supported, exit 1

Parameters the simulator uses: `power` (0/1), `reset` (1 = pulse), `boot`
(none|pxe|default|cdrom|bios, selector values 0/1/2/5/6; "default" is what the IPMI spec calls
"force boot from default hard disk"), `shutdown` (1 = soft off, chassis control 5) and
`identify` ("interval force"). A non-zero exit with a message on standard output makes the
simulator answer the IPMI request with completion code 0xFF (unspecified error).

Design decisions
----------------
* State lives in the BMC's state directory, next to ipmi_sim's own persistent files:
  `chassis.json` (power, boot device, boot count, the machine's pid, ...), written atomically
  (temporary file + rename) so readers never see half a file, and `chassis.log`, one line per
  event with a UTC timestamp. ipmi_sim is single threaded and waits for this program, so calls
  for one BMC never overlap; nothing else writes these files while the BMC runs.
* Power is observable: while powered on, a "machine" process runs (by default `sleep`, shown
  as `stratus-bmcsim-machine NAME` in `ps`). Power on starts it, power off kills it, reset
  restarts it (boot count + 1), soft off sends it SIGTERM and power reads as off once it has
  exited (a machine command that ignores SIGTERM models an OS that does not shut down). If the
  machine process dies on its own, power reads as off, as a crashed host would.
* The machine is started with stdio on /dev/null (ipmi_sim reads our stdout until EOF) in a
  process group of its own, and signals go to that whole group, so a machine that forks (a
  shell loop) dies at once with all its children, inside the chassis call that killed it. The
  launcher makes ipmi_sim a child subreaper, so the orphaned machine is re-parented to
  ipmi_sim, whose SIGCHLD handler reaps it; without that, killed machines would stay zombies
  where PID 1 does not reap (as in this project's sandboxes).
* Caveat: ipmi_sim installs its SIGCHLD handler without SA_RESTART, so a child of it that dies
  while it reads a `get` answer from this program interrupts that read and the IPMI request
  fails with 0xFF. Deaths caused by `set` calls happen inside those calls and are harmless;
  a custom machine that takes its time to exit after a soft off can hit the window.
* A pid alone is not trusted: the process start time from /proc is stored with it, and zombie
  processes count as dead.
* `machine.json` (optional, written by the launcher) holds the machine command as an argv list;
  it gets BMCSIM_NAME, BMCSIM_STATE_DIR, BMCSIM_BOOT_DEVICE and BMCSIM_BOOT_COUNT in its
  environment, so a later PXE simulation can act on the boot device it was started with.
  `"machine": null` disables the process entirely (power is then the state file alone), which
  keeps a fleet of hundreds of BMCs light.
* The boot device override is sticky: the simulator does not pass the "persistent" or "valid"
  flags to this program, so a set device stays until changed; `last_boot_device` records what
  the machine booted from at its last power on or reset.
* When the launcher stops a BMC it kills the machine but keeps `power: 1` with
  `machine_detached: true` (a BMC restart does not power off the host); the next call after the
  BMC is back starts a new machine process, as a descendant of the new ipmi_sim.
* Fault injection for tests: a `fault` file in the state directory listing parameter names
  (power, boot, reset, shutdown, identify, or `all`), one a line, makes `set` of those fail.
  The line `power-read-after-set` instead lets `set power` succeed and makes the one `get
  power` after it fail, as a BMC busy with the power change may refuse a status read.
* Standard library only, started with `python -I -S` so each call costs a few milliseconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

STATE_FILE = "chassis.json"
LOG_FILE = "chassis.log"
MACHINE_FILE = "machine.json"
FAULT_FILE = "fault"
REFUSE_READ_FILE = "refuse-power-read"
BOOT_DEVICES = ("none", "pxe", "default", "cdrom", "bios")

DEFAULT_STATE = {
    "power": 0,
    "boot": "none",
    "boot_count": 0,
    "last_boot_device": None,
    "machine_pid": None,
    "machine_start": None,
    "machine_detached": False,
    "soft_off_requested": False,
    "identify": None,
}


class ChassisError(Exception):
    """A request the chassis refuses; the message goes to ipmi_sim's log."""


def _timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def load_state(state_dir: str) -> dict:
    state = dict(DEFAULT_STATE)
    try:
        with open(os.path.join(state_dir, STATE_FILE)) as fh:
            state.update(json.load(fh))
    except FileNotFoundError:
        pass
    return state


def save_state(state_dir: str, state: dict) -> None:
    path = os.path.join(state_dir, STATE_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(state, fh, sort_keys=True)
    os.replace(tmp, path)


def log_event(state_dir: str, message: str) -> None:
    with open(os.path.join(state_dir, LOG_FILE), "a") as fh:
        fh.write(f"{_timestamp()} {message}\n")


def _proc_start_time(pid: int) -> str | None:
    """Start time (clock ticks since boot) of a live, non-zombie process, else None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def machine_alive(state: dict) -> bool:
    pid = state.get("machine_pid")
    if not pid:
        return False
    return _proc_start_time(pid) == state.get("machine_start")


def _machine_command(state_dir: str) -> tuple[str | None, list[str]] | None:
    """(executable, argv) of the machine process, or None when machines are disabled."""
    try:
        with open(os.path.join(state_dir, MACHINE_FILE)) as fh:
            config = json.load(fh)
    except FileNotFoundError:
        config = {}
    if "machine" in config and config["machine"] is None:
        return None
    if config.get("machine"):
        return None, list(config["machine"])
    # Default: `sleep` under a telling argv[0], so `ps` shows which BMC's machine it is.
    name = config.get("name") or os.path.basename(os.path.abspath(state_dir))
    sleep = shutil.which("sleep") or "/bin/sleep"
    return sleep, [f"stratus-bmcsim-machine {name}", "2147483647"]


def start_machine(state_dir: str, state: dict) -> None:
    command = _machine_command(state_dir)
    state["boot_count"] = int(state.get("boot_count") or 0) + 1
    state["last_boot_device"] = state.get("boot", "none")
    state["machine_detached"] = False
    state["soft_off_requested"] = False
    if command is None:
        state["machine_pid"] = state["machine_start"] = None
        return
    executable, argv = command
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "BMCSIM_NAME": os.path.basename(os.path.abspath(state_dir)),
        "BMCSIM_STATE_DIR": os.path.abspath(state_dir),
        "BMCSIM_BOOT_DEVICE": state["last_boot_device"],
        "BMCSIM_BOOT_COUNT": str(state["boot_count"]),
    }
    proc = subprocess.Popen(
        argv,
        executable=executable,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        cwd=state_dir,
        env=env,
        start_new_session=True,
    )
    state["machine_pid"] = proc.pid
    state["machine_start"] = _proc_start_time(proc.pid)


def stop_machine(state: dict, sig: int = signal.SIGKILL) -> None:
    """Signal the machine's whole process group, so no child of it outlives it."""
    if machine_alive(state):
        try:
            os.killpg(state["machine_pid"], sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(state["machine_pid"], sig)
            except ProcessLookupError:
                pass
    if sig == signal.SIGKILL:
        state["machine_pid"] = state["machine_start"] = None


def refresh(state_dir: str, state: dict) -> None:
    """Bring the recorded power state in line with the machine process."""
    if not state["power"]:
        return
    if state.get("machine_detached"):
        # The BMC was restarted while the host was on: bring the machine process back.
        if _machine_command(state_dir) is not None:
            start_machine(state_dir, state)
            state["boot_count"] -= 1  # the host kept running; this is not a new boot
        state["machine_detached"] = False
        log_event(state_dir, "machine process re-attached after BMC restart")
        return
    if state.get("machine_pid") and not machine_alive(state):
        state["power"] = 0
        state["machine_pid"] = state["machine_start"] = None
        reason = "soft off completed" if state.get("soft_off_requested") else "machine process exited"
        state["soft_off_requested"] = False
        log_event(state_dir, f"power off ({reason})")


def _faults(state_dir: str) -> set[str]:
    try:
        with open(os.path.join(state_dir, FAULT_FILE)) as fh:
            return {line.strip() for line in fh if line.strip()}
    except FileNotFoundError:
        return set()


def do_get(state_dir: str, params: list[str]) -> list[str]:
    state = load_state(state_dir)
    before = dict(state)
    refresh(state_dir, state)
    if state != before:
        save_state(state_dir, state)
    out = []
    for param in params:
        if param == "power":
            refuse = os.path.join(state_dir, REFUSE_READ_FILE)
            if os.path.exists(refuse):
                os.unlink(refuse)
                raise ChassisError("injected fault: power read refused after a power change")
            out.append(f"power:{1 if state['power'] else 0}")
        elif param == "boot":
            out.append(f"boot:{state.get('boot', 'none')}")
        else:
            raise ChassisError(f"Invalid parameter: {param}")
    return out


def do_set(state_dir: str, args: list[str]) -> None:
    state = load_state(state_dir)
    refresh(state_dir, state)
    faults = _faults(state_dir)
    while args:
        param = args.pop(0)
        if param == "identify":
            # "identify" carries two values: interval and force flag (ipmi_sim may pass them
            # as one quoted word).
            values = args.pop(0).split() if args else []
            if len(values) == 1 and args:
                values.append(args.pop(0))
        else:
            if not args:
                raise ChassisError(f"No value present for parameter {param}")
            values = [args.pop(0)]
        if param in faults or "all" in faults:
            raise ChassisError(f"injected fault for {param}")
        value = values[0] if values else ""
        if param == "power":
            if "power-read-after-set" in faults:
                with open(os.path.join(state_dir, REFUSE_READ_FILE), "w"):
                    pass
            want = value.strip() not in ("0", "")
            if want and not state["power"]:
                state["power"] = 1
                start_machine(state_dir, state)
                log_event(state_dir, f"power on (boot device {state['last_boot_device']}, boot {state['boot_count']})")
            elif not want and state["power"]:
                stop_machine(state)
                state["power"] = 0
                state["soft_off_requested"] = False
                log_event(state_dir, "power off")
        elif param == "reset":
            if state["power"]:
                stop_machine(state)
                start_machine(state_dir, state)
                log_event(state_dir, f"reset (boot device {state['last_boot_device']}, boot {state['boot_count']})")
            else:
                log_event(state_dir, "reset ignored: power is off")
        elif param == "shutdown":
            if state["power"]:
                if machine_alive(state):
                    state["soft_off_requested"] = True
                    stop_machine(state, signal.SIGTERM)
                    log_event(state_dir, "soft off requested (SIGTERM to machine)")
                else:
                    state["power"] = 0
                    log_event(state_dir, "power off (soft off)")
        elif param == "boot":
            if value not in BOOT_DEVICES:
                raise ChassisError(f"Invalid boot value: {value}")
            if state.get("boot") != value:
                log_event(state_dir, f"boot device {value}")
            state["boot"] = value
        elif param == "identify":
            state["identify"] = " ".join(values)
        else:
            raise ChassisError(f"Invalid parameter: {param}")
    save_state(state_dir, state)
    if state["power"] and state.get("soft_off_requested"):
        # Give a machine that exits promptly on SIGTERM the chance to be seen as off at once.
        for _ in range(20):
            if not machine_alive(state):
                refresh(state_dir, state)
                save_state(state_dir, state)
                break
            time.sleep(0.005)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: chassis.py STATE_DIR get|set PARAM [VALUE] ...")
        return 1
    state_dir, op, rest = argv[0], argv[1], list(argv[2:])
    try:
        if op == "get":
            print("\n".join(do_get(state_dir, rest)))
        elif op == "set":
            do_set(state_dir, rest)
        elif op == "check":
            return 1
        else:
            raise ChassisError(f"Unknown operation: {op}")
    except ChassisError as err:
        print(err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
