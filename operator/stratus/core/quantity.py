"""Kubernetes quantities for the units Stratus uses: whole bytes with binary suffixes,
and CPU counts or millicores. Integer arithmetic only."""

from __future__ import annotations

import re

_BINARY = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_RE = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")


def parse_bytes(q: str | int) -> int:
    """"4Gi" -> 4294967296. Raises ValueError naming the value when it is not a byte quantity."""
    if isinstance(q, int):
        return q
    m = _RE.match(str(q).strip())
    if not m:
        raise ValueError(f"{q!r} is not a quantity of bytes such as 512Mi or 4Gi")
    number, suffix = int(m.group(1)), m.group(2) or ""
    return number * (_BINARY.get(suffix) or _DECIMAL[suffix])


def parse_millicpu(q: str | int) -> int:
    """"2" -> 2000, "500m" -> 500."""
    if isinstance(q, int):
        return q * 1000
    s = str(q).strip()
    if s.endswith("m"):
        return int(s[:-1])
    if re.fullmatch(r"[0-9]+", s):
        return int(s) * 1000
    if re.fullmatch(r"[0-9]*\.[0-9]+", s):
        whole, frac = s.split(".")
        return int(whole or 0) * 1000 + int((frac + "000")[:3])
    raise ValueError(f"{q!r} is not a CPU quantity such as 2 or 500m")


def format_bytes(n: int) -> str:
    """The largest binary suffix that divides `n` exactly: 4294967296 -> "4Gi"."""
    for suffix in ("Pi", "Ti", "Gi", "Mi", "Ki"):
        unit = _BINARY[suffix]
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)
