"""Seeded workload generator for the consolidation benchmark.

Decisions:

- VM sizes follow the published distribution of the Azure public VM dataset
  (Cortez et al., "Resource Central", SOSP 2017, and the AzurePublicDataset
  summary): 1, 2, 4 and 8 cores with probabilities 0.50, 0.25, 0.11 and 0.14,
  and 2, 4 or 8 GiB per core with equal probability. That gives 12 shapes, a
  mean of 2.56 cores and about 12 GiB per VM.
- Hosts: "homogeneous" is 64 cores / 256 GiB (4 GiB per core, so memory is
  the binding dimension for this VM mix); "mixed" cycles through 32c/128GiB,
  64c/256GiB, 64c/512GiB and 96c/384GiB in proportions 3:3:2:2.
- Utilisation: VMs are drawn until the next one would push the binding
  dimension past the target fraction of total usable capacity. The number of
  VMs therefore follows from the host count and the target (about 10.7 VMs
  per host at 50 percent on the homogeneous shape).
- Fragmented start: every VM goes to a uniformly random host that has room
  and holds no member of its anti-affinity group, so every host carries about
  the target utilisation: the worst case for consolidation.
- Anti-affinity: 10 percent of the VMs are put in groups of 2 to 5 members.
- Everything is drawn from one ``random.Random(seed)``: same seed, same
  workload, on any machine. The variants below draw their extra numbers
  after everything the base workload draws, so the base workloads are the
  same as before they existed.
- Variants (issue 19), each a ``Variant``:
  *memory-heavy*: 8 or 16 GiB per core instead of 2, 4 or 8 (mean about
  31 GiB per VM), so memory binds harder and wide-memory VMs strand room;
  *pinned*: a share of the VMs (5 percent) may not migrate, which pins their
  hosts on; *standby-large*: 10 percent more hosts, of a larger shape
  (96 cores / 768 GiB), off in standby, for shape exchange; *pending*: 85
  percent utilisation plus pending VMs of wide shapes (8 to 16 cores, 96 to
  128 GiB, more than most hosts have free) worth 6 percent of capacity, and
  2 percent more hosts in standby: standby hosts place some,
  defragmentation (or nothing) the rest.
- Power: idle and peak watts per host shape (``WATTS``), in the range that
  published SPECpower results for two-socket servers show; only ratios
  between shapes matter to the comparison.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from stratus.core.consolidation import AntiAffinityGroup, Constraints, Host, VM

GIB = 1024
CORE = 1000

CORES = (1, 2, 4, 8)
CORE_WEIGHTS = (0.50, 0.25, 0.11, 0.14)
GIB_PER_CORE = (2, 4, 8)

SHAPES = {
    "homogeneous": ((64, 256, 1),),
    "mixed": ((32, 128, 3), (64, 256, 3), (64, 512, 2), (96, 384, 2)),
}


# (cores, GiB) -> (idle W, peak W)
WATTS = {
    (32, 128): (90, 250),
    (64, 256): (120, 380),
    (64, 512): (140, 420),
    (96, 384): (160, 520),
    (96, 768): (190, 600),
}
MEMORY_GIB_PER_CORE = (8, 16)
LARGE_STANDBY = (96, 768)
PENDING_SHAPES = ((8, 96), (12, 112), (16, 128))


@dataclass(frozen=True)
class Variant:
    name: str = ""
    memory_heavy: bool = False
    pinned_fraction: float = 0.0
    standby_large_fraction: float = 0.0
    pending_fraction: float = 0.0
    standby_fraction: float = 0.0


VARIANTS = {
    "": Variant(),
    "memheavy": Variant("memheavy", memory_heavy=True),
    "pinned": Variant("pinned", pinned_fraction=0.05),
    "standby-large": Variant("standby-large", standby_large_fraction=0.10),
    "pending": Variant("pending", pending_fraction=0.06, standby_fraction=0.02),
}


@dataclass(frozen=True)
class Workload:
    name: str
    shape: str
    utilisation: int  # target percent
    seed: int
    hosts: tuple[Host, ...]
    vms: tuple[VM, ...]
    constraints: Constraints
    variant: str = ""

    @property
    def actual_utilisation_permille(self) -> int:
        """Placed demand over the capacity of the hosts that are on."""
        on = [h for h in self.hosts if h.powered_on]
        cap_c = sum(h.cpu_millicores for h in on)
        cap_m = sum(h.memory_mib for h in on)
        c = sum(v.cpu_millicores for v in self.vms if v.host)
        m = sum(v.memory_mib for v in self.vms if v.host)
        return max(c * 1000 // cap_c, m * 1000 // cap_m)


def make_hosts(count: int, shape: str) -> list[Host]:
    pattern = [(c, g) for c, g, weight in SHAPES[shape] for _ in range(weight)]
    return [_host(f"host-{i:05d}", *pattern[i % len(pattern)]) for i in range(count)]


def _host(name: str, cores: int, gib: int, **kw) -> Host:
    idle, peak = WATTS.get((cores, gib), (100, 300))
    return Host(name, cores * CORE, gib * GIB, idle_watts=idle, peak_watts=peak, **kw)


def draw_vm_shape(rng: random.Random, memory_heavy: bool = False) -> tuple[int, int]:
    cores = rng.choices(CORES, CORE_WEIGHTS)[0]
    return cores * CORE, cores * rng.choice(MEMORY_GIB_PER_CORE if memory_heavy else GIB_PER_CORE) * GIB


def generate(hosts: int, shape: str, utilisation: int, seed: int, aa_fraction: float = 0.10,
             variant: Variant | str = "") -> Workload:
    if isinstance(variant, str):
        variant = VARIANTS[variant]
    if variant.pending_fraction:
        utilisation = max(utilisation, 85)
    rng = random.Random(f"{seed}:{hosts}:{shape}:{utilisation}" + (f":{variant.name}" if variant.memory_heavy else ""))
    host_list = make_hosts(hosts, shape)
    cap_c = sum(h.cpu_millicores for h in host_list)
    cap_m = sum(h.memory_mib for h in host_list)
    limit_c = cap_c * utilisation // 100
    limit_m = cap_m * utilisation // 100
    sizes: list[tuple[int, int]] = []
    used_c = used_m = 0
    while True:
        c, m = draw_vm_shape(rng, variant.memory_heavy)
        if used_c + c > limit_c or used_m + m > limit_m:
            break
        sizes.append((c, m))
        used_c += c
        used_m += m
    n = len(sizes)
    names = [f"vm-{j:06d}" for j in range(n)]

    # Anti-affinity groups of 2..5 members covering aa_fraction of the VMs.
    order = list(range(n))
    rng.shuffle(order)
    target = int(n * aa_fraction)
    groups: list[list[int]] = []
    k = 0
    while k < target:
        size = min(rng.randint(2, 5), target - k)
        if size < 2:
            break
        groups.append(order[k:k + size])
        k += size
    group_of = {j: g for g, members in enumerate(groups) for j in members}

    # Fragmented start: uniformly random host with room.
    room_c = [h.cpu_millicores for h in host_list]
    room_m = [h.memory_mib for h in host_list]
    held: list[set[int]] = [set() for _ in host_list]
    where: list[int] = [0] * n
    place_order = sorted(range(n), key=lambda j: -(sizes[j][0] + sizes[j][1] // 4))
    for j in place_order:
        c, m = sizes[j]
        g = group_of.get(j)
        chosen = -1
        for _ in range(64):
            i = rng.randrange(hosts)
            if room_c[i] >= c and room_m[i] >= m and (g is None or g not in held[i]):
                chosen = i
                break
        if chosen < 0:
            fits = [i for i in range(hosts) if room_c[i] >= c and room_m[i] >= m and (g is None or g not in held[i])]
            if not fits:
                raise RuntimeError("generator could not place a VM; lower the utilisation")
            chosen = rng.choice(fits)
        room_c[chosen] -= c
        room_m[chosen] -= m
        if g is not None:
            held[chosen].add(g)
        where[j] = chosen
    pinned = set()
    if variant.pinned_fraction:
        pinned = set(rng.sample(range(n), int(n * variant.pinned_fraction)))
    vms = [VM(names[j], sizes[j][0], sizes[j][1], host_list[where[j]].name, migratable=j not in pinned)
           for j in range(n)]
    if variant.standby_large_fraction:
        extra = max(1, int(hosts * variant.standby_large_fraction))
        host_list += [_host(f"host-{hosts + k:05d}", *LARGE_STANDBY, powered_on=False, standby=True)
                      for k in range(extra)]
    if variant.pending_fraction:
        pattern = [(c, g) for c, g, weight in SHAPES[shape] for _ in range(weight)]
        extra = max(1, int(hosts * variant.standby_fraction))
        host_list += [_host(f"host-{hosts + k:05d}", *pattern[k % len(pattern)], powered_on=False, standby=True)
                      for k in range(extra)]
        want_m = cap_m * variant.pending_fraction
        got_m = 0
        k = 0
        while got_m < want_m:
            cores, gib = rng.choice(PENDING_SHAPES)
            vms.append(VM(f"pending-{k:05d}", cores * CORE, gib * GIB, None))
            got_m += gib * GIB
            k += 1
    constraints = Constraints(
        anti_affinity_groups=tuple(
            AntiAffinityGroup(f"aa-{g:05d}", tuple(names[j] for j in members)) for g, members in enumerate(groups)
        ),
        headroom_percent=0,
        low_watermark_percent=100,
        high_watermark_percent=100,
    )
    name = f"{shape}-{hosts}-u{utilisation}" + (f"-{variant.name}" if variant.name else "")
    return Workload(name, shape, utilisation, seed, tuple(host_list), tuple(vms), constraints, variant.name)
