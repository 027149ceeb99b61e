"""Inputs and outputs of the consolidation planner.

Decisions:

- Frozen, slotted dataclasses rather than pydantic models: the planner is handed
  tens of thousands of VMs per cycle and validation of every field on every
  construction would cost more than the planning itself. The controller parses
  the Kubernetes objects into pydantic models first and converts them to these
  plain records at the boundary.
- Integers only: CPU in millicores, memory in MiB, percentages as integer
  percent, utilisation in the figures as integer per-mille. Nothing in a plan
  is a float, so a plan serialises to a CRD status without rounding surprises.
- A VM's migration cost is its memory (live migration copies memory), so the
  cost is not a separate field.
- Host roles. ``powered_on`` is the power state the BMC reports. ``standby``
  marks a host parked by consolidation: the planner may power it on when
  capacity runs short. A host is *in service* when it is powered on, not in
  standby and not cordoned: only in-service hosts receive VMs, and only they
  are powered off by the planner. A powered-off host that is not in standby is
  out of service (broken, in maintenance) and is never touched. A cordoned host
  is left entirely alone: nothing lands on it, nothing is moved off it, its
  power is never changed.
- Power. Each host carries an idle and a peak draw in watts; a host that is on
  draws ``idle + (peak - idle) * cpu requested / cpu capacity`` (the linear
  model SPECpower-style measurements support between idle and full load), a
  host that is off draws nothing. Requests stand in for utilisation: the
  planner sees no live usage, and requests are what a plan moves. The
  defaults (100 W idle, 300 W peak) are a generic two-socket server; the
  policy's per-shape table overrides them.
- Objective and trigger. ``objective`` says what a scale-down minimises: hosts
  on (``hosts``) or estimated watts (``power``). ``trigger`` says when it acts:
  ``savings`` (the default) whenever the best plan's saving beats its cost
  (at most ``max_migrations_per_host`` migrations per host released, or at
  least ``min_watts_per_migration`` watts saved per migration), ``watermarks``
  only below the low watermark, as before.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Host:
    """A physical host as the planner sees it."""

    name: str
    cpu_millicores: int
    memory_mib: int
    powered_on: bool = True
    standby: bool = False
    cordoned: bool = False
    idle_watts: int = 100
    peak_watts: int = 300

    def watts(self, cpu_requested: int) -> int:
        """Estimated draw when on with ``cpu_requested`` millicores requested."""
        if self.cpu_millicores <= 0:
            return self.idle_watts
        busy = min(cpu_requested, self.cpu_millicores)
        return self.idle_watts + (self.peak_watts - self.idle_watts) * busy // self.cpu_millicores

    @property
    def in_service(self) -> bool:
        return self.powered_on and not self.standby and not self.cordoned

    @property
    def wakeable(self) -> bool:
        """May be brought into service by a power-on step."""
        return self.standby and not self.cordoned


@dataclass(frozen=True, slots=True)
class VM:
    """A virtual machine's requests and where it runs (``host=None``: pending)."""

    name: str
    cpu_millicores: int
    memory_mib: int
    host: str | None = None
    migratable: bool = True

    @property
    def migration_cost_mib(self) -> int:
        return self.memory_mib


@dataclass(frozen=True, slots=True)
class AntiAffinityGroup:
    """No two members may ever share a host, in the final state or on the way."""

    name: str
    vms: tuple[str, ...]


class Objective(enum.StrEnum):
    HOSTS = "hosts"
    POWER = "power"


class Trigger(enum.StrEnum):
    SAVINGS = "savings"
    WATERMARKS = "watermarks"


@dataclass(frozen=True, slots=True)
class Constraints:
    """What every plan must respect, plus the watermarks that pick a mode.

    ``headroom_percent`` shrinks each host: usable = capacity * (100 - h) // 100.
    Utilisation is demand over usable capacity of in-service hosts, per
    dimension, and the larger of the two counts. ``max_migrations=None`` means
    no budget. ``min_free_hosts`` empty in-service hosts are kept powered on as
    a spare.
    """

    anti_affinity_groups: tuple[AntiAffinityGroup, ...] = ()
    headroom_percent: int = 0
    max_migrations: int | None = None
    must_stay_on: frozenset[str] = frozenset()
    min_free_hosts: int = 0
    low_watermark_percent: int = 50
    high_watermark_percent: int = 90
    objective: Objective = Objective.HOSTS
    trigger: Trigger = Trigger.SAVINGS
    max_migrations_per_host: int = 20
    min_watts_per_migration: int = 10

    def __post_init__(self) -> None:
        if not 0 <= self.headroom_percent < 100:
            raise ValueError("headroom_percent must be in [0, 100)")
        if not 0 <= self.low_watermark_percent <= self.high_watermark_percent:
            raise ValueError("low_watermark_percent must be in [0, high_watermark_percent]")
        if self.max_migrations is not None and self.max_migrations < 0:
            raise ValueError("max_migrations must be >= 0")
        if self.min_free_hosts < 0:
            raise ValueError("min_free_hosts must be >= 0")
        if self.max_migrations_per_host < 0 or self.min_watts_per_migration < 0:
            raise ValueError("the saving floors must be >= 0")

    def usable(self, host: Host) -> tuple[int, int]:
        keep = 100 - self.headroom_percent
        return host.cpu_millicores * keep // 100, host.memory_mib * keep // 100


class Mode(enum.StrEnum):
    SCALE_UP = "ScaleUp"
    SCALE_DOWN = "ScaleDown"
    HOLD = "Hold"


class Action(enum.StrEnum):
    POWER_ON = "PowerOn"
    PLACE = "Place"  # a pending VM is expected to land on ``host``
    MIGRATE = "Migrate"
    POWER_OFF = "PowerOff"


@dataclass(frozen=True, slots=True)
class Step:
    """One action. Steps run in list order; steps sharing a ``wave`` are
    independent of each other and may run concurrently."""

    action: Action
    host: str
    vm: str | None = None
    source: str | None = None
    wave: int = 0


@dataclass(frozen=True, slots=True)
class Figures:
    hosts_on_before: int
    hosts_on_after: int
    hosts_in_use_before: int
    hosts_in_use_after: int
    lower_bound_hosts: int
    migrations: int
    migrated_mib: int
    placements: int
    powered_on: int
    powered_off: int
    unplaced: int
    utilisation_before_permille: int
    utilisation_after_permille: int
    watts_before: int = 0
    watts_after: int = 0

    @property
    def energy_saved_wh_per_day(self) -> int:
        return (self.watts_before - self.watts_after) * 24


@dataclass(frozen=True, slots=True)
class Plan:
    mode: Mode
    reason: str
    message: str
    steps: tuple[Step, ...]
    unplaced: tuple[str, ...]
    figures: Figures
    truncated: bool = False  # the migration budget stopped consolidation early
    # Why each pending VM left in ``unplaced`` could not be placed.
    unplaced_reasons: tuple[tuple[str, str], ...] = ()

    @property
    def power_on(self) -> tuple[str, ...]:
        return tuple(s.host for s in self.steps if s.action is Action.POWER_ON)

    @property
    def power_off(self) -> tuple[str, ...]:
        return tuple(s.host for s in self.steps if s.action is Action.POWER_OFF)

    @property
    def migrations(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.action is Action.MIGRATE)

    @property
    def placements(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.action is Action.PLACE)

    @property
    def is_empty(self) -> bool:
        return not self.steps


@dataclass(frozen=True, slots=True)
class Violation:
    """A broken constraint found by :func:`check_plan`; ``step`` is the index in
    ``plan.steps`` (``None`` for a finding about the plan as a whole)."""

    step: int | None
    kind: str
    message: str = field(compare=False)
