"""One pass of a ConsolidationPlan's execution, as decisions over what the pass sees.

The executor loop (``stratus.loops.consolidation_executor``) reads the plan and the
world, builds a :class:`Pass` and calls :func:`run`; every change to the cluster goes
through the :class:`HostActions` it passes in (cordon, power switch, migrations), so a
test drives a pass with an in-memory implementation and checks both the action states
and the calls. The clock is the pass's ``now``. The rules are the ones the README and
``controllers/consolidation.py`` describe: waves in order, KubeVirt's migration limits,
never power off a host that runs a VM, stop safely on the first failure.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing as t

from ...api.consolidationplan import ActionState, PlanPhase
from . import inputs as ci

#: A Place action is the planner's expectation, not an order: the scheduler may give the
#: room to another pending VM. It is skipped after this long, so the plan ends and the
#: next cycle plans for what is still pending.
PLACE_GRACE = 60.0
DONE = (ActionState.SUCCEEDED.value, ActionState.SKIPPED.value)


class HostActions(t.Protocol):
    """What a pass may do to the cluster (``drivers.hosts`` in the operator)."""

    def cordon(self, node: str, plan: str) -> None: ...
    def uncordon(self, node: str) -> None: ...
    def set_online(self, bmn: str, online: bool) -> None: ...
    def create_migration(self, mig: dict) -> None: ...
    def delete_migration(self, name: str, namespace: str) -> None: ...
    def target_pod_message(self, namespace: str, migration: str) -> str: ...


def iso(at: datetime.datetime) -> str:
    return at.astimezone(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def age(value: str, now: datetime.datetime) -> float:
    """Seconds from an RFC 3339 time to ``now`` (0 for none)."""
    if not value:
        return 0.0
    return (now - datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))).total_seconds()


def describe(a: dict) -> str:
    if a["type"] == "Migrate":
        return f"Migrate {a['vm']} from {a['source']} to {a['host']}"
    if a["type"] == "Place":
        return f"Place {a['vm']} on {a['host']}"
    return f"{a['type']} {a['host']}"


def hosts_to_cordon(actions: list[dict]) -> list[str]:
    """The hosts a plan empties: those it powers off, and migration sources that
    receive no VM (a reserve host left on empty). A host that hands VMs on and
    takes others in (a reshaping plan) stays schedulable: its arrivals need it."""
    targets = {a["host"] for a in actions if a["type"] == "Migrate"}
    sources = {a["source"] for a in actions if a["type"] == "Migrate"}
    return sorted((sources - targets) | {a["host"] for a in actions if a["type"] == "PowerOff"})


def current_wave(actions: list[dict], states: list[str]) -> list[int]:
    """The Pending actions that may start now: those of the lowest wave with any
    Pending, once every action of an earlier wave is done (Succeeded or Skipped)."""
    pending = [i for i, s in enumerate(states) if s == ActionState.PENDING.value]
    if not pending:
        return []
    wave = min(int(actions[i].get("wave", 0)) for i in pending)
    if not all(states[i] in DONE for i in range(len(actions)) if int(actions[i].get("wave", 0)) < wave):
        return []
    return [i for i in pending if int(actions[i].get("wave", 0)) == wave]


class Pass:
    """What one execution pass sees and changes: the plan, its action statuses, the
    world as read at the start of the pass, and the events to post."""

    def __init__(self, plan: dict, policy_spec: dict, world: dict[str, list[dict]], migrations: list[dict],
                 now: datetime.datetime):
        self.plan = plan
        self.name = plan["metadata"]["name"]
        self.spec = plan.get("spec") or {}
        self.actions: list[dict] = self.spec.get("actions") or []
        st = plan.get("status") or {}
        self.statuses: list[dict] = [dict(s) for s in st.get("actions") or []]
        if len(self.statuses) != len(self.actions):
            self.statuses = [{"index": i, "state": ActionState.PENDING.value} for i in range(len(self.actions))]
        self.policy = policy_spec
        self.world = world
        self.now = now
        self.nodes = {n["metadata"]["name"]: n for n in world["nodes"]}
        self.bmns = {b["metadata"]["name"]: b for b in world["bmns"]}
        self.vmis = {ci.vm_key(v["metadata"]["namespace"], v["metadata"]["name"]): v for v in world["vmis"]}
        self.migrations = migrations
        self.events: list[tuple[str, str, str]] = []

    # -- lookups --
    def bmn_of(self, host: str) -> dict | None:
        node = self.nodes.get(host)
        label = ((node or {}).get("metadata", {}).get("labels") or {}).get(ci.BMN_LABEL)
        if label and label in self.bmns:
            return self.bmns[label]
        for b in self.bmns.values():
            if ((b.get("status") or {}).get("nodeName") or b["metadata"]["name"]) == host:
                return b
        return None

    def migration(self, vm: str, name: str) -> dict | None:
        namespace, _ = ci.split_vm_key(vm)
        for m in self.migrations:
            if m["metadata"]["name"] == name and m["metadata"]["namespace"] == namespace:
                return m
        return None

    def source_of(self, mig: dict) -> str:
        vm = ci.vm_key(mig["metadata"]["namespace"], (mig.get("spec") or {}).get("vmiName", ""))
        return ((self.vmis.get(vm) or {}).get("status") or {}).get("nodeName", "")

    def set(self, i: int, state: ActionState, message: str = "", **extra) -> None:
        s = self.statuses[i]
        if s.get("state") != state.value:
            if state == ActionState.RUNNING:
                s["startedAt"] = iso(self.now)
            elif state != ActionState.PENDING:
                s["finishedAt"] = iso(self.now)
                s.setdefault("startedAt", s["finishedAt"])
        s["state"] = state.value
        if message:
            s["message"] = message[:1024]
        s.update(extra)
        if state == ActionState.FAILED:
            self.events.append(("Warning", "ActionFailed", f"{describe(self.actions[i])}: {message}"))

    def state(self, i: int) -> str:
        return self.statuses[i].get("state", ActionState.PENDING.value)

    def states(self) -> list[str]:
        return [self.state(i) for i in range(len(self.actions))]

    def stopping(self) -> bool:
        return bool(self.spec.get("cancel")) or any(s.get("state") == ActionState.FAILED.value for s in self.statuses)


# -- following a Running action ---------------------------------------------------------------


def progress(p: Pass, i: int, io: HostActions) -> None:
    """Follow a Running action."""
    a, s = p.actions[i], p.statuses[i]
    elapsed = age(s.get("startedAt", ""), p.now)
    if a["type"] == "PowerOn":
        bmn = p.bmn_of(a["host"])
        node = p.nodes.get(a["host"])
        if bmn and (bmn.get("status") or {}).get("poweredOn") is True and node is not None and ci.node_ready(node):
            io.uncordon(a["host"])
            p.set(i, ActionState.SUCCEEDED, "powered on (BMC) and the Node is Ready; uncordoned")
        elif elapsed > p.policy.get("powerTimeoutSeconds", 600):
            p.set(i, ActionState.FAILED, f"host {a['host']} was not powered on and Ready within "
                                         f"{p.policy.get('powerTimeoutSeconds', 600)}s")
    elif a["type"] == "PowerOff":
        power_off(p, i, elapsed, io)
    elif a["type"] == "Place":
        vmi = p.vmis.get(a["vm"])
        node = ((vmi or {}).get("status") or {}).get("nodeName")
        if vmi is None:
            p.set(i, ActionState.SKIPPED, "the VM is gone")
        elif node:
            p.set(i, ActionState.SUCCEEDED, f"runs on {node}")
        elif elapsed > PLACE_GRACE:
            p.set(i, ActionState.SKIPPED, f"not placed within {PLACE_GRACE:.0f}s (the scheduler may have given the room "
                                          "to another VM); the next cycle looks again")
    elif a["type"] == "Migrate":
        mig = p.migration(a["vm"], s.get("migration", ""))
        if mig is None:
            p.set(i, ActionState.FAILED, f"migration {s.get('migration')} disappeared before it finished")
            return
        phase = (mig.get("status") or {}).get("phase", "")
        if phase == "Succeeded":
            vmi = p.vmis.get(a["vm"])
            where = ((vmi or {}).get("status") or {}).get("nodeName", "")
            p.set(i, ActionState.SUCCEEDED, f"migrated; runs on {where or a['host']}")
        elif phase == "Failed":
            why = ((mig.get("status") or {}).get("migrationState") or {}).get("failureReason") or "KubeVirt reported it Failed"
            p.set(i, ActionState.FAILED, f"migration {mig['metadata']['name']} failed: {why}")
        elif elapsed > p.policy.get("migrationTimeoutSeconds", 600):
            namespace, _ = ci.split_vm_key(a["vm"])
            why = io.target_pod_message(namespace, mig["metadata"]["name"])
            io.delete_migration(mig["metadata"]["name"], namespace)
            p.set(i, ActionState.FAILED, f"migration {mig['metadata']['name']} did not finish within "
                                         f"{p.policy.get('migrationTimeoutSeconds', 600)}s (phase {phase or 'none'}"
                                         f"{'; ' + why if why else ''}); cancelled")


def power_off(p: Pass, i: int, elapsed: float, io: HostActions) -> None:
    """PowerOff, one look: never while a VMI runs on the host; wait for launcher Pods
    that are still being torn down after their migration; then spec.online false and
    wait for the BMC to say off."""
    host = p.actions[i]["host"]
    timeout = p.policy.get("powerTimeoutSeconds", 600)
    bmn = p.bmn_of(host)
    if bmn is None:
        p.set(i, ActionState.FAILED, f"host {host} has no BareMetalNode to power it off")
        return
    bname = bmn["metadata"]["name"]
    if (bmn.get("spec") or {}).get("online", False):
        running = ci.vms_on_host(p.world["vmis"], [], host)
        if running:
            p.set(i, ActionState.FAILED, f"host {host} still runs {len(running)} VMs ({', '.join(running[:5])}); "
                                         "not powered off")
            return
        leaving = ci.vms_on_host([], p.world["pods"], host)
        if leaving:
            if elapsed > timeout:
                p.set(i, ActionState.FAILED, f"launcher Pods of {', '.join(leaving[:5])} did not leave host {host} "
                                             f"within {timeout}s; not powered off")
            else:
                p.set(i, ActionState.RUNNING, f"waiting for {len(leaving)} launcher Pods to leave the host")
            return
        io.set_online(bname, False)
        p.set(i, ActionState.RUNNING, f"spec.online cleared on BareMetalNode {bname}; waiting for the BMC")
    elif (bmn.get("status") or {}).get("poweredOn") is False:
        p.set(i, ActionState.SUCCEEDED, f"powered off through BareMetalNode {bname} (BMC)")
    elif elapsed > timeout:
        p.set(i, ActionState.FAILED, f"host {host} was not powered off within {timeout}s")


# -- starting a Pending action ----------------------------------------------------------------


def start(p: Pass, i: int, in_flight: list[str], io: HostActions) -> bool:
    """Start a Pending action of the current wave; False when it must wait (limits)."""
    a = p.actions[i]
    host = a["host"]
    if a["type"] == "PowerOn":
        bmn = p.bmn_of(host)
        if bmn is None:
            p.set(i, ActionState.FAILED, f"host {host} has no BareMetalNode to power it on")
            return True
        io.set_online(bmn["metadata"]["name"], True)
        p.set(i, ActionState.RUNNING, f"spec.online set on BareMetalNode {bmn['metadata']['name']}")
    elif a["type"] == "Place":
        p.set(i, ActionState.RUNNING, "waiting for the scheduler to place it")
    elif a["type"] == "PowerOff":
        p.set(i, ActionState.RUNNING, "checking that no VM is left on the host")
        power_off(p, i, 0.0, io)
    elif a["type"] == "Migrate":
        vmi = p.vmis.get(a["vm"])
        where = ((vmi or {}).get("status") or {}).get("nodeName", "")
        name = ci.migration_name(p.name, i, a["vm"])
        existing = p.migration(a["vm"], name)
        if existing is not None:  # made before a restart
            p.set(i, ActionState.RUNNING, f"migration {name} to {host}", migration=name)
            return True
        if vmi is None:
            p.set(i, ActionState.SKIPPED, "the VM is gone")
            return True
        if where == host:
            p.set(i, ActionState.SUCCEEDED, f"already on {host}")
            return True
        if where != a["source"]:
            p.set(i, ActionState.SKIPPED, f"the VM moved to {where or 'no node'} in the meantime")
            return True
        why = ci._vmi_pinned(vmi)
        if why:
            p.set(i, ActionState.FAILED, f"the VM cannot be migrated now: {why}")
            return True
        target = p.nodes.get(host)
        if target is None or not ci.node_ready(target) or (target.get("spec") or {}).get("unschedulable"):
            p.set(i, ActionState.FAILED, f"target host {host} is not Ready or is cordoned")
            return True
        if not ci.migrations_to_start([(i, a["source"])], in_flight, int(p.policy.get("parallelMigrationsPerCluster", 5)),
                                      int(p.policy.get("parallelOutboundMigrationsPerNode", 2))):
            return False
        server = ((vmi["metadata"].get("labels") or {}).get(ci.SERVER_LABEL))
        io.create_migration(ci.migration_object(p.name, i, a["vm"], host, server))
        in_flight.append(a["source"])
        p.set(i, ActionState.RUNNING, f"migration {name} to {host}", migration=name)
    return True


# -- the pass ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a pass leaves to write: the status patch (None when nothing changed), the
    final phase if the plan ended, and the events to post."""

    patch: dict | None
    final: tuple[PlanPhase, str, str] | None
    events: list[tuple[str, str, str]]


def release_cordons(p: Pass, io: HostActions) -> list[str]:
    """Uncordon the hosts this plan cordoned that are still powered on."""
    out = []
    off = {p.actions[i]["host"] for i in range(len(p.actions))
           if p.actions[i]["type"] == "PowerOff" and p.state(i) == ActionState.SUCCEEDED.value}
    for host, node in p.nodes.items():
        if ((node.get("metadata") or {}).get("annotations") or {}).get(ci.CORDONED_BY) == p.name and host not in off:
            io.uncordon(host)
            out.append(host)
    return sorted(out)


def run(p: Pass, io: HostActions) -> Outcome:
    """One pass over an Executing plan: cordon, follow what runs, start what may, and
    end the plan when nothing runs and either everything is done or it is stopping."""
    name = p.name
    # Cordon every host the plan empties (once; again after a crash before it was done).
    for host in hosts_to_cordon(p.actions) if not p.stopping() else ():
        node = p.nodes.get(host)
        if node is not None and ((node.get("metadata") or {}).get("annotations") or {}).get(ci.CORDONED_BY) != name:
            io.cordon(host, name)
            node.setdefault("metadata", {}).setdefault("annotations", {})[ci.CORDONED_BY] = name

    for i in range(len(p.actions)):
        if p.state(i) == ActionState.RUNNING.value:
            progress(p, i, io)

    stopping = p.stopping()
    if not stopping:
        wave = current_wave(p.actions, p.states())
        if wave:
            in_flight = [((m.get("status") or {}).get("migrationState") or {}).get("sourceNode") or
                         p.source_of(m) for m in p.migrations if ci.migration_in_flight(m)]
            for i in wave:
                if not start(p, i, in_flight, io) and p.actions[i]["type"] == "Migrate":
                    continue  # a limit: try the next one (another source host may have room)
                if p.state(i) == ActionState.FAILED.value:
                    break

    running = [i for i in range(len(p.actions)) if p.state(i) == ActionState.RUNNING.value]
    failed = [i for i in range(len(p.actions)) if p.state(i) == ActionState.FAILED.value]
    stopping = stopping or bool(failed)
    final: tuple[PlanPhase, str, str] | None = None
    if stopping and not running:
        for i in range(len(p.actions)):
            if p.state(i) == ActionState.PENDING.value:
                p.set(i, ActionState.SKIPPED, "the plan stopped before this action")
        released = release_cordons(p, io)
        cancelled = bool(p.spec.get("cancel")) and not failed
        if cancelled:
            final = (PlanPhase.CANCELLED, "Cancelled", "cancelled: nothing new started"
                     + (f"; uncordoned {', '.join(released)}" if released else ""))
        else:
            first = p.actions[failed[0]]
            final = (PlanPhase.FAILED, "ActionFailed", f"{describe(first)} failed: {p.statuses[failed[0]].get('message', '')}; "
                     f"the plan stopped safely ({sum(1 for s in p.statuses if s['state'] == 'Skipped')} actions skipped"
                     + (f", uncordoned {', '.join(released)}" if released else "") + ")")
    elif not running and all(p.state(i) in DONE for i in range(len(p.actions))):
        released = release_cordons(p, io)
        off = sum(1 for i, a in enumerate(p.actions) if a["type"] == "PowerOff" and p.state(i) == "Succeeded")
        on = sum(1 for i, a in enumerate(p.actions) if a["type"] == "PowerOn" and p.state(i) == "Succeeded")
        moved = sum(1 for i, a in enumerate(p.actions) if a["type"] == "Migrate" and p.state(i) == "Succeeded")
        final = (PlanPhase.SUCCEEDED, "Completed", f"done: {moved} VMs migrated, {off} hosts powered off, {on} hosts powered on"
                 + (f"; uncordoned {', '.join(released)}" if released else ""))

    counts = {k: sum(1 for s in p.statuses if s["state"] == v)
              for k, v in (("succeeded", "Succeeded"), ("failed", "Failed"), ("skipped", "Skipped"))}
    patch = {"actions": p.statuses, **counts}
    if final is None:
        patch["message"] = (f"{counts['succeeded']}/{len(p.actions)} actions done, {len(running)} running"
                            + ("; stopping after a failure" if stopping else ""))
    st = p.plan.get("status") or {}
    changed = any((st.get(k) != v) for k, v in patch.items())
    return Outcome(patch if changed else None, final, list(p.events))
