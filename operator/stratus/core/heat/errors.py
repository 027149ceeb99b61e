"""Errors of the HOT engine: every one names the path in the template it is about."""

from __future__ import annotations


class HeatError(Exception):
    """A template, environment or parameter error at ``path`` (dotted, e.g.
    ``resources.web.properties.flavor``). ``str()`` is ``"path: message"``."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path, self.message = path, message


class ValidationFailed(Exception):
    """Every error found in one validation pass (the template is refused as a whole)."""

    def __init__(self, errors: list[HeatError]):
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def join(path: str, *parts: object) -> str:
    out = path
    for part in parts:
        part = f"[{part}]" if isinstance(part, int) else str(part)
        out = f"{out}{part}" if part.startswith("[") or not out else f"{out}.{part}"
    return out
