"""Public HOT templates through the Stratus Heat engine: which are accepted unchanged, and
why each of the others is refused.

The templates come from PyPI source distributions pinned in hack/hot-corpus.txt (fetched
and cached by hack/hot-corpus.sh; none is copied into this repository). Each template is
loaded as the operator loads a Stack (stratus.core.heat.Stack) with the other templates of
its folder as its files, first as it is, then with a value for each required parameter the
template gives no default (what `--parameter` would pass) in a project whose admins may
create cluster-wide objects (OS::Nova::Flavor needs that, as Heat needs the admin role). Writes corpus.md beside this
file: the counts, and one row per template with the source it came from.

    .venv/bin/python benchmarks/orchestration/corpus.py
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import re
import subprocess
import sys
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
#: A refusal names where in the template it is, as Heat's own messages do.
PATH_RE = re.compile(r"^(environment|heat_template_version|description|parameter_groups|parameters|resources|outputs|"
                     r"conditions)\b")
#: What a user would pass for a required parameter, by HOT parameter type.
SAMPLE = {"string": "m1.small", "number": 1, "json": {}, "comma_delimited_list": "a,b", "boolean": False}


@dataclasses.dataclass
class Verdict:
    source: str          # <sdist>:<path inside it>
    as_is: bool          # accepted with no parameter given
    with_params: bool    # accepted once each required parameter has a value, in an admin project
    reasons: list[str]   # the engine's messages when refused with parameters given
    resource_types: list[str]


def sources() -> list[tuple[str, pathlib.Path]]:
    """(sdist label, template folder) per line of hack/hot-corpus.txt, fetched when missing."""
    out = subprocess.run([str(ROOT / "hack" / "hot-corpus.sh"), sys.executable], check=True, capture_output=True,
                         text=True).stdout
    return [(label, pathlib.Path(folder)) for label, folder in (line.split(" ", 1) for line in out.splitlines() if line)]


def _required(text: str) -> dict:
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return {}
    params = doc.get("parameters") if isinstance(doc, dict) else None
    return {name: SAMPLE.get(str((spec or {}).get("type", "string")), "x")
            for name, spec in (params or {}).items() if isinstance(spec, dict) and "default" not in spec}


def _types(text: str) -> list[str]:
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return []
    resources = doc.get("resources") if isinstance(doc, dict) else None
    return sorted({str((r or {}).get("type")) for r in (resources or {}).values() if isinstance(r, dict)})


def assess(label: str, folder: pathlib.Path, path: pathlib.Path) -> Verdict:
    from stratus.core import heat

    text = path.read_text()
    files = {p.relative_to(path.parent).as_posix(): p.read_text() for p in path.parent.rglob("*.yaml") if p != path}
    plain = heat.Stack(text, name="corpus", namespace="corpus", files=files)
    given = heat.Stack(text, name="corpus", namespace="corpus", files=files, parameters=_required(text), admin=True)
    return Verdict(f"{label}:{path.relative_to(folder).as_posix()}", plain.ok, given.ok,
                   [str(e) for e in given.errors], _types(text))


def run() -> list[Verdict]:
    return [assess(label, folder, path) for label, folder in sources() for path in sorted(folder.rglob("*.yaml"))]


def _kind_of(reason: str) -> str:
    """A refusal's family, for the summary: the message without the resource's own name."""
    tail = reason.split(": ", 1)[-1]
    return re.sub(r"'[^']*'", "'…'", tail)[:100]


def write(verdicts: list[Verdict], seconds: float, path: pathlib.Path) -> None:
    n = len(verdicts)
    as_is = sum(v.as_is for v in verdicts)
    given = sum(v.with_params for v in verdicts)
    families = collections.Counter(_kind_of(v.reasons[0]) for v in verdicts if v.reasons)
    lines = [
        "# Public HOT templates through the Stratus Heat engine",
        "",
        f"Sources: {', '.join(sorted({v.source.split(':')[0] for v in verdicts}))} (PyPI source distributions pinned "
        "in hack/hot-corpus.txt). Command: `.venv/bin/python benchmarks/orchestration/corpus.py`; "
        f"{seconds:.1f} s for {n} templates.",
        "",
        "| templates | accepted unchanged | accepted with required parameters given, in an admin project | refused, with a path-named reason |",
        "|---:|---:|---:|---:|",
        f"| {n} | {as_is} | {given} | {n - given} |",
        "",
        "## Why the others are refused (first reason per template)",
        "",
        "| templates | reason |",
        "|---:|---|",
        *[f"| {count} | {reason} |" for reason, count in families.most_common()],
        "",
        "## Every template",
        "",
        "| source | unchanged | with parameters (admin) | resource types | first reason |",
        "|---|:-:|:-:|---|---|",
        *[f"| {v.source} | {'yes' if v.as_is else 'no'} | {'yes' if v.with_params else 'no'} | "
          f"{', '.join(v.resource_types)} | {(v.reasons[0] if v.reasons else '').replace('|', '/')[:160]} |"
          for v in verdicts],
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    t0 = time.monotonic()
    verdicts = run()
    write(verdicts, time.monotonic() - t0, pathlib.Path(__file__).with_name("corpus.md"))
    print(f"{sum(v.with_params for v in verdicts)} of {len(verdicts)} accepted; see corpus.md")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "operator"))
    main()
