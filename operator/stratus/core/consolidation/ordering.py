"""Turning a target placement into a safe sequence of moves.

Decisions:

- Moves are released in waves. A move joins the current wave only if its
  target has room for it and for everything already admitted to that wave
  while the VMs leaving in the wave are still counted on their sources, and
  if it meets no member of its anti-affinity groups among the target's
  residents or the wave's other arrivals. Any order inside a wave, and any
  concurrency, is therefore safe.
- Plans that only move VMs from hosts being released to hosts staying on
  come out as a single wave. Reshaping plans (``packing``) move VMs between
  kept hosts too, always towards hosts later in the fill order, so they form
  chains but no cycle and come out as a few waves. The general case (swaps,
  cycles) exists for callers that bring their own target placement, such as
  the benchmark baselines that repack from scratch, and for moves composed
  from several planning rounds.
- A deadlock (every remaining move waits for another) is broken by a detour:
  one blocked VM goes to a third host with room now and continues to its
  target later. That costs one extra migration per detour and is reported by
  the caller's figures. If no host has room for a detour the moves are
  returned as unorderable rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .world import World


@dataclass(frozen=True, slots=True)
class Move:
    vm: int
    source: int  # -1: a pending VM being placed
    target: int


class Unorderable(Exception):
    def __init__(self, left: list[Move]) -> None:
        super().__init__(f"{len(left)} moves cannot be ordered safely")
        self.left = left


def order_moves(world: World, moves: list[Move], allow_detours: bool = True) -> list[list[Move]]:
    """Waves of moves, each safe to run concurrently from the state before it.

    ``world`` is the state the moves start from (hosts already powered on
    count as serving); it is not modified.
    """
    load_c = list(world.load_c)
    load_m = list(world.load_m)
    cap_c, cap_m = world.cap_c, world.cap_m
    vm_c, vm_m, vm_groups = world.vm_c, world.vm_m, world.vm_groups
    held: dict[int, dict[int, int]] = {}

    def groups_on(h: int) -> dict[int, int]:
        d = held.get(h)
        if d is None:
            base = world.host_groups[h]
            d = held[h] = dict(base) if base else {}
        return d

    remaining = list(moves)
    waves: list[list[Move]] = []
    detours_left = len(moves)
    while remaining:
        wave: list[Move] = []
        rest: list[Move] = []
        extra_c: dict[int, int] = {}
        extra_m: dict[int, int] = {}
        arriving: dict[int, dict[int, int]] = {}
        for mv in remaining:
            t = mv.target
            c = vm_c[mv.vm]
            m = vm_m[mv.vm]
            ec = extra_c.get(t, 0) + c
            em = extra_m.get(t, 0) + m
            if load_c[t] + ec > cap_c[t] or load_m[t] + em > cap_m[t]:
                rest.append(mv)
                continue
            gs = vm_groups[mv.vm]
            if gs:
                here = groups_on(t)
                inc = arriving.get(t)
                if any(here.get(g, 0) > 0 or (inc and g in inc) for g in gs):
                    rest.append(mv)
                    continue
                if inc is None:
                    inc = arriving[t] = {}
                for g in gs:
                    inc[g] = 1
            extra_c[t] = ec
            extra_m[t] = em
            wave.append(mv)
        if not wave:
            if not allow_detours or detours_left <= 0:
                raise Unorderable(rest)
            found = _detours(world, rest, load_c, load_m, groups_on, detours_left)
            if not found:
                raise Unorderable(rest)
            detours_left -= len(found)
            for first, later, index in found:
                wave.append(first)
                rest[index] = later
        for mv in wave:
            c = vm_c[mv.vm]
            m = vm_m[mv.vm]
            if mv.source >= 0:
                load_c[mv.source] -= c
                load_m[mv.source] -= m
            load_c[mv.target] += c
            load_m[mv.target] += m
            gs = vm_groups[mv.vm]
            if gs:
                dst = groups_on(mv.target)
                for g in gs:
                    dst[g] = dst.get(g, 0) + 1
                if mv.source >= 0:
                    src = groups_on(mv.source)
                    for g in gs:
                        src[g] -= 1
        waves.append(wave)
        remaining = rest
    return waves


def _detours(world: World, blocked: list[Move], load_c, load_m, groups_on, limit: int):
    """Blocked VMs to park on third hosts so that other blocked moves fit.

    Only VMs whose leaving unblocks a move into their source qualify (they sit
    on a cycle), which is what makes each detour progress; at most one per
    source host per wave. The parking host is the one with the most room
    among hosts no remaining move targets, if any. All detours found in one
    pass go into the same wave, so a repack with many cycles does not cost a
    wave per cycle.
    """
    cap_c, cap_m = world.cap_c, world.cap_m
    vm_c, vm_m = world.vm_c, world.vm_m
    targets = {mv.target for mv in blocked}
    waiting: dict[int, list[Move]] = {}
    for mv in blocked:
        waiting.setdefault(mv.target, []).append(mv)
    hosts = world.serving_hosts()
    extra_c: dict[int, int] = {}
    extra_m: dict[int, int] = {}
    parked: dict[int, set[int]] = {}
    used: set[int] = set()
    out = []
    for index, mv in enumerate(blocked):
        if len(out) >= limit:
            break
        a = mv.source
        if a < 0 or a in used or a not in waiting:
            continue
        c, m = vm_c[mv.vm], vm_m[mv.vm]
        if not any(load_c[a] - c + vm_c[o.vm] <= cap_c[a] and load_m[a] - m + vm_m[o.vm] <= cap_m[a]
                   for o in waiting[a]):
            continue
        gs = world.vm_groups[mv.vm]
        best, best_key = -1, None
        for h in hosts:
            if h == a or h == mv.target:
                continue
            rc = cap_c[h] - load_c[h] - extra_c.get(h, 0) - c
            rm = cap_m[h] - load_m[h] - extra_m.get(h, 0) - m
            if rc < 0 or rm < 0:
                continue
            if gs:
                here = groups_on(h)
                if any(here.get(g, 0) > 0 or g in parked.get(h, ()) for g in gs):
                    continue
            key = (h not in targets, rc / (cap_c[h] or 1) + rm / (cap_m[h] or 1))
            if best_key is None or key > best_key:
                best, best_key = h, key
        if best >= 0:
            used.add(a)
            extra_c[best] = extra_c.get(best, 0) + c
            extra_m[best] = extra_m.get(best, 0) + m
            parked.setdefault(best, set()).update(gs)
            out.append((Move(mv.vm, a, best), Move(mv.vm, best, mv.target), index))
    return out
