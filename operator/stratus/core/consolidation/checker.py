"""An independent checker that replays a plan step by step.

Decisions:

- It shares nothing with the planner but the input records: it rebuilds host
  loads and anti-affinity membership from the VM list and replays every step
  against that state, so a planner bug cannot hide behind a shared helper.
  The benchmark runs it on every algorithm's plan, baselines included.
- Steps are checked in list order (sequential execution). On top of that,
  steps that share a ``wave`` are checked as if they ran at the same time:
  each target must have room for everything arriving in the wave while the
  VMs leaving in that wave still occupy their sources, and no two arrivals
  may clash on anti-affinity. A controller can then run a wave concurrently.
- Only breaches of constraints count: capacity after headroom, anti-affinity,
  the migration budget, must-stay-on, the free-host reserve, non-migratable
  VMs, cordoned hosts, and the basic well-formedness of each step (the VM is
  where the step says it is, the target is powered on). Watermarks choose a
  mode; they are not constraints.
- A host that starts over its usable capacity (headroom was raised, say) is
  not a violation by itself; adding to it is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from .model import Action, Constraints, Host, Plan, Step, Violation, VM


class _State:
    """The replayed world: where each VM is, host loads, members, power."""

    def __init__(self, hosts: Sequence[Host], vms: Sequence[VM], constraints: Constraints) -> None:
        self.constraints = constraints
        self.hosts = {h.name: h for h in hosts}
        self.vms = {v.name: v for v in vms}
        self.where: dict[str, str | None] = {v.name: v.host for v in vms}
        self.cpu: dict[str, int] = defaultdict(int)
        self.mem: dict[str, int] = defaultdict(int)
        self.members: dict[str, set[str]] = defaultdict(set)
        for v in vms:
            if v.host is not None:
                self.cpu[v.host] += v.cpu_millicores
                self.mem[v.host] += v.memory_mib
                self.members[v.host].add(v.name)
        self.groups_of: dict[str, list[str]] = defaultdict(list)
        self.group_members: dict[str, frozenset[str]] = {}
        for g in constraints.anti_affinity_groups:
            self.group_members[g.name] = frozenset(g.vms)
            for name in g.vms:
                self.groups_of[name].append(g.name)
        self.serving = {h.name for h in hosts if h.in_service}
        self.limit = {h.name: constraints.usable(h) for h in hosts}
        self.migrations = 0

    def clash(self, vm: str, names: set[str]) -> str | None:
        for g in self.groups_of.get(vm, ()):
            for other in self.group_members[g]:
                if other != vm and other in names:
                    return g
        return None

    def free_hosts(self) -> int:
        return sum(1 for h in self.serving if not self.members[h])


def check_plan(
    hosts: Sequence[Host], vms: Sequence[VM], constraints: Constraints, plan: Plan | Iterable[Step]
) -> list[Violation]:
    """Replay ``plan`` from the given state and return every violation found."""
    steps = list(plan.steps if isinstance(plan, Plan) else plan)
    st = _State(hosts, vms, constraints)
    out: list[Violation] = []
    i = 0
    while i < len(steps):
        end = i
        while end < len(steps) and steps[end].wave == steps[i].wave:
            end += 1
        wave_findings = _check_wave(st, steps, i, end)
        sequential: list[Violation] = []
        for j in range(i, end):
            _replay(st, j, steps[j], sequential)
        flagged_steps = {v.step for v in sequential}
        flagged_hosts = {steps[v.step].host for v in sequential if v.kind == "Overfill"}
        out.extend(sequential)
        out.extend(v for v in wave_findings
                   if v.step not in flagged_steps and not (v.kind == "WaveOverfill" and steps[v.step].host in flagged_hosts))
        i = end
    if constraints.max_migrations is not None and st.migrations > constraints.max_migrations:
        out.append(Violation(None, "MigrationBudget",
                             f"{st.migrations} migrations exceed the budget of {constraints.max_migrations}"))
    return sorted(out, key=lambda v: (-1 if v.step is None else v.step, v.kind))


def _replay(st: _State, i: int, s: Step, out: list[Violation]) -> None:
    host = st.hosts.get(s.host)
    if host is None:
        out.append(Violation(i, "UnknownHost", f"step {i}: no host {s.host!r}"))
        return
    if s.action is Action.POWER_ON:
        if host.cordoned:
            out.append(Violation(i, "CordonedHost", f"step {i}: {s.host} is cordoned"))
        elif s.host in st.serving:
            out.append(Violation(i, "AlreadyOn", f"step {i}: {s.host} is already in service"))
        elif not host.standby:
            out.append(Violation(i, "NotWakeable", f"step {i}: {s.host} is not a standby host"))
        st.serving.add(s.host)
        return
    if s.action is Action.POWER_OFF:
        if host.cordoned:
            out.append(Violation(i, "CordonedHost", f"step {i}: {s.host} is cordoned"))
        if s.host in st.constraints.must_stay_on:
            out.append(Violation(i, "MustStayOn", f"step {i}: {s.host} must stay on"))
        if s.host not in st.serving:
            out.append(Violation(i, "NotInService", f"step {i}: {s.host} is not in service"))
        if st.members[s.host]:
            out.append(Violation(i, "HostNotEmpty", f"step {i}: {s.host} still runs {sorted(st.members[s.host])[:3]}"))
        was_free = s.host in st.serving and not st.members[s.host]
        st.serving.discard(s.host)
        if was_free and st.constraints.min_free_hosts and st.free_hosts() < st.constraints.min_free_hosts:
            out.append(Violation(i, "FreeHostReserve",
                                 f"step {i}: fewer than {st.constraints.min_free_hosts} free hosts stay on"))
        return
    vm = st.vms.get(s.vm or "")
    if vm is None:
        out.append(Violation(i, "UnknownVM", f"step {i}: no VM {s.vm!r}"))
        return
    current = st.where[vm.name]
    if s.action is Action.PLACE:
        if current is not None:
            out.append(Violation(i, "NotPending", f"step {i}: {vm.name} already runs on {current}"))
    else:
        st.migrations += 1
        if not vm.migratable:
            out.append(Violation(i, "NotMigratable", f"step {i}: {vm.name} may not be migrated"))
        if current is None or current != s.source:
            out.append(Violation(i, "WrongSource", f"step {i}: {vm.name} is on {current}, not {s.source}"))
        elif current in st.hosts and st.hosts[current].cordoned:
            out.append(Violation(i, "CordonedHost", f"step {i}: {current} is cordoned"))
        if current == s.host:
            out.append(Violation(i, "NoOpMigration", f"step {i}: {vm.name} is already on {s.host}"))
    if host.cordoned:
        out.append(Violation(i, "CordonedHost", f"step {i}: {s.host} is cordoned"))
    elif s.host not in st.serving:
        out.append(Violation(i, "TargetNotInService", f"step {i}: {s.host} is not in service"))
    if current == s.host:
        return
    cap_cpu, cap_mem = st.limit[s.host]
    if st.cpu[s.host] + vm.cpu_millicores > cap_cpu or st.mem[s.host] + vm.memory_mib > cap_mem:
        out.append(Violation(i, "Overfill", f"step {i}: {vm.name} does not fit on {s.host}"))
    g = st.clash(vm.name, st.members[s.host])
    if g is not None:
        out.append(Violation(i, "AntiAffinity", f"step {i}: {vm.name} would share {s.host} with group {g}"))
    if current is not None:
        st.cpu[current] -= vm.cpu_millicores
        st.mem[current] -= vm.memory_mib
        st.members[current].discard(vm.name)
    st.cpu[s.host] += vm.cpu_millicores
    st.mem[s.host] += vm.memory_mib
    st.members[s.host].add(vm.name)
    st.where[vm.name] = s.host


def _check_wave(st: _State, steps: list[Step], start: int, end: int) -> list[Violation]:
    """The moves of one wave, run concurrently from the state at its start:
    sources still hold their VMs, so each target needs room for every
    arrival, and arrivals may not clash with each other or with residents."""
    extra_cpu: dict[str, int] = defaultdict(int)
    extra_mem: dict[str, int] = defaultdict(int)
    arriving: dict[str, set[str]] = defaultdict(set)
    first_step: dict[str, int] = {}
    out: list[Violation] = []
    for i in range(start, end):
        s = steps[i]
        if s.action not in (Action.PLACE, Action.MIGRATE) or s.vm not in st.vms or s.host not in st.hosts:
            continue
        vm = st.vms[s.vm]
        extra_cpu[s.host] += vm.cpu_millicores
        extra_mem[s.host] += vm.memory_mib
        first_step.setdefault(s.host, i)
        g = st.clash(vm.name, arriving[s.host] | st.members[s.host])
        if g is not None:
            out.append(Violation(i, "WaveAntiAffinity",
                                 f"step {i}: {vm.name} may meet a member of {g} on {s.host} within one wave"))
        arriving[s.host].add(vm.name)
    for h, c in extra_cpu.items():
        cap_cpu, cap_mem = st.limit[h]
        if st.cpu[h] + c > cap_cpu or st.mem[h] + extra_mem[h] > cap_mem:
            out.append(Violation(first_step[h], "WaveOverfill",
                                 f"wave {steps[start].wave}: arrivals on {h} need more room than it has before the wave"))
    return out


def apply_plan(hosts: Sequence[Host], vms: Sequence[VM], plan: Plan) -> tuple[list[Host], list[VM]]:
    """The state after ``plan`` runs (no checking: pair it with :func:`check_plan`)."""
    on = {s.host for s in plan.steps if s.action is Action.POWER_ON}
    off = {s.host for s in plan.steps if s.action is Action.POWER_OFF}
    moved = {s.vm: s.host for s in plan.steps if s.action in (Action.PLACE, Action.MIGRATE)}
    new_hosts = []
    for h in hosts:
        if h.name in off:
            h = Host(h.name, h.cpu_millicores, h.memory_mib, powered_on=False, standby=True, cordoned=h.cordoned)
        elif h.name in on:
            h = Host(h.name, h.cpu_millicores, h.memory_mib, powered_on=True, standby=False, cordoned=h.cordoned)
        new_hosts.append(h)
    new_vms = [VM(v.name, v.cpu_millicores, v.memory_mib, moved[v.name], v.migratable) if v.name in moved else v
               for v in vms]
    return new_hosts, new_vms
