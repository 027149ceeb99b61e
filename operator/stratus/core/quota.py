"""Quota math for compute: does one more server fit in what the project may hold?

The identity service sets the limits (Project spec.quota: servers, vcpus, memory); the
compute controller counts usage and asks `check`. Pure: usage is given, not fetched.

Rules:
- Usage counts every Server of the project that has been admitted (its VirtualMachine
  exists), whether running or stopped (Nova counts SHUTOFF servers too), sized by what
  the VM requests.
- A limit that is absent (None) is unlimited; 0 allows nothing.
- A resize is checked as the difference between the new and the old size.
"""

from __future__ import annotations

import dataclasses

from .quantity import format_bytes, parse_bytes


@dataclasses.dataclass(frozen=True)
class Usage:
    servers: int = 0
    vcpus: int = 0
    memory_bytes: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.servers + other.servers, self.vcpus + other.vcpus, self.memory_bytes + other.memory_bytes)


def check(quota: dict | None, used: Usage, request: Usage) -> str:
    """"" when `request` fits on top of `used`, else a sentence naming every limit it
    exceeds and what to do."""
    quota = quota or {}
    over = []
    after = used + request
    if quota.get("servers") is not None and request.servers > 0 and after.servers > int(quota["servers"]):
        over.append(f"servers {after.servers} > {quota['servers']}")
    if quota.get("vcpus") is not None and request.vcpus > 0 and after.vcpus > int(quota["vcpus"]):
        over.append(f"vCPUs {after.vcpus} > {quota['vcpus']}")
    if quota.get("memory") and request.memory_bytes > 0:
        limit = parse_bytes(quota["memory"])
        if after.memory_bytes > limit:
            over.append(f"memory {format_bytes(after.memory_bytes)} > {quota['memory']}")
    if not over:
        return ""
    return ("Exceeds the project's quota (" + ", ".join(over) + "); delete or shrink other servers, "
            "or ask an administrator to raise the project's quota")
