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
  workload, on any machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Workload:
    name: str
    shape: str
    utilisation: int  # target percent
    seed: int
    hosts: tuple[Host, ...]
    vms: tuple[VM, ...]
    constraints: Constraints

    @property
    def actual_utilisation_permille(self) -> int:
        cap_c = sum(h.cpu_millicores for h in self.hosts)
        cap_m = sum(h.memory_mib for h in self.hosts)
        c = sum(v.cpu_millicores for v in self.vms)
        m = sum(v.memory_mib for v in self.vms)
        return max(c * 1000 // cap_c, m * 1000 // cap_m)


def make_hosts(count: int, shape: str) -> list[Host]:
    pattern = [(c, g) for c, g, weight in SHAPES[shape] for _ in range(weight)]
    return [
        Host(f"host-{i:05d}", pattern[i % len(pattern)][0] * CORE, pattern[i % len(pattern)][1] * GIB)
        for i in range(count)
    ]


def draw_vm_shape(rng: random.Random) -> tuple[int, int]:
    cores = rng.choices(CORES, CORE_WEIGHTS)[0]
    return cores * CORE, cores * rng.choice(GIB_PER_CORE) * GIB


def generate(hosts: int, shape: str, utilisation: int, seed: int, aa_fraction: float = 0.10) -> Workload:
    rng = random.Random(f"{seed}:{hosts}:{shape}:{utilisation}")
    host_list = make_hosts(hosts, shape)
    cap_c = sum(h.cpu_millicores for h in host_list)
    cap_m = sum(h.memory_mib for h in host_list)
    limit_c = cap_c * utilisation // 100
    limit_m = cap_m * utilisation // 100
    sizes: list[tuple[int, int]] = []
    used_c = used_m = 0
    while True:
        c, m = draw_vm_shape(rng)
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
    vms = tuple(VM(names[j], sizes[j][0], sizes[j][1], host_list[where[j]].name) for j in range(n))
    constraints = Constraints(
        anti_affinity_groups=tuple(
            AntiAffinityGroup(f"aa-{g:05d}", tuple(names[j] for j in members)) for g, members in enumerate(groups)
        ),
        headroom_percent=0,
        low_watermark_percent=100,
        high_watermark_percent=100,
    )
    return Workload(f"{shape}-{hosts}-u{utilisation}", shape, utilisation, seed, tuple(host_list), vms, constraints)
