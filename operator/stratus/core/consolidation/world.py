"""The planner's working copy of the cluster: flat integer arrays indexed by
position in the input lists.

Decisions:

- Everything the algorithms touch is a list of ints indexed by host or VM
  position, built once per planning step. Dataclass attribute access in the
  hot loops would cost several times more at 50,000 VMs.
- The world is rebuilt from (power state, VM placement) rather than patched
  in place. A planning step on a rebuilt world is therefore exactly what a
  fresh ``plan()`` call on that state would do, which is what the no-churn
  guarantee rests on (see ``planner``).
- Anti-affinity groups become small integer ids; a VM carries a tuple of the
  ids it belongs to (usually empty), a host a count per id it currently holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from .model import Constraints, Host, VM


class World:
    __slots__ = (
        "hosts", "vms", "constraints", "host_index", "cap_c", "cap_m", "serving", "wakeable", "cordoned",
        "must_stay_on", "vm_c", "vm_m", "vm_host", "vm_migratable", "vm_groups", "load_c", "load_m",
        "host_vms", "host_groups", "pinned", "group_names", "vm_shape", "shape_c", "shape_m",
        "raw_c", "idle_w", "peak_w",
    )

    def __init__(
        self,
        hosts: Sequence[Host],
        vms: Sequence[VM],
        constraints: Constraints,
        serving: list[bool] | None = None,
        vm_host: list[int] | None = None,
    ) -> None:
        self.hosts = hosts
        self.vms = vms
        self.constraints = constraints
        self.host_index = {h.name: i for i, h in enumerate(hosts)}
        if len(self.host_index) != len(hosts):
            raise ValueError("host names must be unique")
        usable = [constraints.usable(h) for h in hosts]
        self.cap_c = [u[0] for u in usable]
        self.cap_m = [u[1] for u in usable]
        self.cordoned = [h.cordoned for h in hosts]
        self.raw_c = [h.cpu_millicores for h in hosts]
        self.idle_w = [h.idle_watts for h in hosts]
        self.peak_w = [h.peak_watts for h in hosts]
        self.serving = list(serving) if serving is not None else [h.in_service for h in hosts]
        # A host the planner powered off becomes a standby host, hence wakeable.
        self.wakeable = [
            (not s) and (not h.cordoned) and (h.standby or (serving is not None and h.in_service))
            for h, s in zip(hosts, self.serving)
        ]
        self.must_stay_on = [h.name in constraints.must_stay_on for h in hosts]
        self.vm_c = [v.cpu_millicores for v in vms]
        self.vm_m = [v.memory_mib for v in vms]
        self.vm_migratable = [v.migratable for v in vms]
        # Distinct request shapes (flavours make them few), for the packer.
        shapes: dict[tuple[int, int], int] = {}
        self.vm_shape = [shapes.setdefault(cm, len(shapes)) for cm in zip(self.vm_c, self.vm_m)]
        self.shape_c = [c for c, _ in shapes]
        self.shape_m = [m for _, m in shapes]
        if vm_host is None:
            index = self.host_index
            vm_host = []
            for v in vms:
                if v.host is None:
                    vm_host.append(-1)
                elif v.host in index:
                    vm_host.append(index[v.host])
                else:
                    raise ValueError(f"VM {v.name} runs on unknown host {v.host}")
        self.vm_host = vm_host
        n = len(hosts)
        self.load_c = [0] * n
        self.load_m = [0] * n
        self.host_vms: list[list[int]] = [[] for _ in range(n)]
        for j, h in enumerate(vm_host):
            if h >= 0:
                self.load_c[h] += self.vm_c[j]
                self.load_m[h] += self.vm_m[j]
                self.host_vms[h].append(j)
        vm_index = {v.name: j for j, v in enumerate(vms)}
        if len(vm_index) != len(vms):
            raise ValueError("VM names must be unique")
        groups: list[list[int]] = [[] for _ in vms]
        self.group_names = []
        for g in constraints.anti_affinity_groups:
            gid = len(self.group_names)
            self.group_names.append(g.name)
            for name in g.vms:
                j = vm_index.get(name)
                if j is not None:
                    groups[j].append(gid)
        self.vm_groups: list[tuple[int, ...]] = [tuple(g) for g in groups]
        self.host_groups: list[dict[int, int] | None] = [None] * n
        for j, gs in enumerate(self.vm_groups):
            h = vm_host[j]
            if gs and h >= 0:
                d = self.host_groups[h]
                if d is None:
                    d = self.host_groups[h] = {}
                for g in gs:
                    d[g] = d.get(g, 0) + 1
        # A pinned host keeps whatever it runs: it must stay on, or it runs a
        # VM that may not move, or it is outside the planner's hands.
        self.pinned = [
            self.must_stay_on[i] or self.cordoned[i] or not self.serving[i]
            or any(not self.vm_migratable[j] for j in self.host_vms[i])
            for i in range(n)
        ]

    # -- figures -----------------------------------------------------------

    def serving_hosts(self) -> list[int]:
        return [i for i, s in enumerate(self.serving) if s and not self.cordoned[i]]

    def demand(self) -> tuple[int, int]:
        """Requests of VMs on serving hosts."""
        c = m = 0
        for i in self.serving_hosts():
            c += self.load_c[i]
            m += self.load_m[i]
        return c, m

    def utilisation_permille(self) -> int:
        """Placed demand over the usable capacity of serving hosts, the larger
        dimension, in per-mille. Pending VMs do not count: they trigger a
        scale-up on their own, and one that fits nowhere must not hold the
        cluster at high utilisation forever."""
        cap_c = cap_m = 0
        for i in self.serving_hosts():
            cap_c += self.cap_c[i]
            cap_m += self.cap_m[i]
        c, m = self.demand()
        if cap_c == 0 or cap_m == 0:
            return 1000 if (c or m) else 0
        return max(c * 1000 // cap_c, m * 1000 // cap_m)

    def free_serving(self) -> int:
        return sum(1 for i in self.serving_hosts() if not self.host_vms[i])

    def host_watts(self, i: int, load_c: int) -> int:
        """Estimated draw of host ``i`` when on with ``load_c`` millicores requested
        (``Host.watts``, on the flat arrays)."""
        raw = self.raw_c[i]
        idle = self.idle_w[i]
        if raw <= 0:
            return idle
        return idle + (self.peak_w[i] - idle) * min(load_c, raw) // raw

    def watts(self) -> int:
        """Estimated draw of the hosts that are on (cordoned ones included)."""
        total = 0
        for i, h in enumerate(self.hosts):
            if self.serving[i] or (self.cordoned[i] and h.powered_on):
                total += self.host_watts(i, self.load_c[i])
            elif h.powered_on and not h.standby and not self.serving[i] and not self.wakeable[i]:
                # On but out of service (not Ready): still draws.
                total += self.host_watts(i, self.load_c[i])
        return total


class Loads:
    """Per-host loads and anti-affinity counts while moves are tried on top of a
    world that stays as it is. A host's group counts are copied before their
    first change; ``groups`` can be handed to ``packing.fill`` as its
    ``host_groups``."""

    __slots__ = ("world", "c", "m", "groups", "_copied")

    def __init__(self, world: World) -> None:
        self.world = world
        self.c = list(world.load_c)
        self.m = list(world.load_m)
        self.groups: list[dict[int, int] | None] = list(world.host_groups)
        self._copied: set[int] = set()

    def groups_on(self, h: int) -> dict[int, int]:
        if h not in self._copied:
            self.groups[h] = dict(self.groups[h] or {})
            self._copied.add(h)
        return self.groups[h]

    def clashes(self, j: int, h: int) -> bool:
        gs = self.world.vm_groups[j]
        if not gs:
            return False
        d = self.groups[h]
        return bool(d) and any(d.get(g, 0) > 0 for g in gs)

    def shift(self, j: int, src: int, dst: int) -> None:
        w = self.world
        if src >= 0:
            self.c[src] -= w.vm_c[j]
            self.m[src] -= w.vm_m[j]
        self.c[dst] += w.vm_c[j]
        self.m[dst] += w.vm_m[j]
        for g in w.vm_groups[j]:
            if src >= 0:
                d = self.groups_on(src)
                d[g] = d.get(g, 0) - 1
                if not d[g]:
                    del d[g]
            d = self.groups_on(dst)
            d[g] = d.get(g, 0) + 1
