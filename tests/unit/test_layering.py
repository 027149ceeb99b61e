"""Layering rules checked over the source with ast (DESIGN.md, Layout):

- services/ may use core/ and drivers/, never controllers/;
- Kubernetes API access goes through drivers/ (drivers/kube.py): nothing outside drivers/
  builds an API path, calls the client's ``call_api``, or catches ApiException to turn
  a 404 into "absent" (``kube.get``/``kube.patch`` answer None and ``kube.delete`` False).

What must stay is allow-listed below with its reason.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "operator" / "stratus"

#: (file relative to the package, rule) -> why it may break the rule for now.
ALLOWED: dict[tuple[str, str], str] = {
    # Development tooling, never in the operator: the local pod runner takes its own
    # (injectable) ApiClient so that it runs beside any operator process.
    ("dev/podrunner.py", "404"): "a Pod gone while it is annotated is ignored; own client by design",
}


def _modules(under: str = "") -> list[pathlib.Path]:
    return sorted(p for p in (PACKAGE / under).rglob("*.py"))


def _rel(path: pathlib.Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _imported_modules(path: pathlib.Path) -> set[str]:
    """Absolute names of the stratus modules a file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ["stratus", *path.relative_to(PACKAGE).parent.parts]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


def test_the_walk_sees_the_package():
    assert len(_modules("services")) >= 3 and len(_modules()) > 50


@pytest.mark.parametrize("path", _modules("services"), ids=_rel)
def test_services_never_import_controllers(path):
    bad = sorted(m for m in _imported_modules(path) if m == "stratus.controllers" or m.startswith("stratus.controllers."))
    assert not bad, f"{_rel(path)} imports {bad}: services may use core/ and drivers/ only (move it there)"


def test_the_import_check_resolves_relative_imports(tmp_path):
    sample = PACKAGE / "services" / "images.py"
    assert "stratus.drivers.kube" in _imported_modules(sample)
    assert "stratus.core.image.visible_to" in _imported_modules(sample)


# -- Kubernetes access only through drivers/ -------------------------------------------------------


def _is_api_exception(node: ast.expr | None) -> bool:
    if node is None:
        return False
    if isinstance(node, ast.Tuple):
        return any(_is_api_exception(e) for e in node.elts)
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return name == "ApiException"


def _mentions_404(handler: ast.ExceptHandler) -> bool:
    for node in ast.walk(handler):
        if isinstance(node, ast.Compare):
            for part in [node.left, *node.comparators]:
                for sub in ast.walk(part):
                    if isinstance(sub, ast.Constant) and sub.value == 404:
                        return True
    return False


def violations(source: str) -> set[str]:
    """The rules a module's source breaks: api-path, call_api, 404."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and (node.value.startswith(("/api/", "/apis/")) or "/namespaces/" in node.value):
            found.add("api-path")
        elif isinstance(node, ast.Attribute) and node.attr == "call_api":
            found.add("call_api")
        elif isinstance(node, ast.ExceptHandler) and _is_api_exception(node.type) and _mentions_404(node):
            found.add("404")
    return found


@pytest.mark.parametrize("source, expected", [
    ('url = f"/apis/{group}/{version}/namespaces/{ns}/things/{name}"', {"api-path"}),
    ('url = "/api/v1/nodes/" + name', {"api-path"}),
    ("client.call_api(url, 'GET')", {"call_api"}),
    ("try:\n    f()\nexcept ApiException as exc:\n    if exc.status != 404:\n        raise", {"404"}),
    ("try:\n    f()\nexcept (ValueError, rest.ApiException) as e:\n    if e.status in (403, 404):\n        pass", {"404"}),
    ("try:\n    f()\nexcept ApiException as exc:\n    if exc.status == 409:\n        pass", set()),
    ('obj = kube.get("v1", "secrets", name, namespace)', set()),
    ('url = "http://host/v2/images/a/b/file"', set()),
])
def test_the_access_check_finds_hand_built_access(source, expected):
    assert violations(source) == expected


def test_the_allow_list_names_only_what_still_breaks_a_rule():
    stale = [key for key in ALLOWED if key[1] not in violations((PACKAGE / key[0]).read_text())]
    assert not stale, f"remove these allow-list entries, the files now keep the rule: {stale}"


@pytest.mark.parametrize("path", [p for p in _modules() if not _rel(p).startswith("drivers/")], ids=_rel)
def test_kubernetes_access_goes_through_drivers(path):
    rel = _rel(path)
    found = {rule for rule in violations(path.read_text()) if (rel, rule) not in ALLOWED}
    assert not found, (f"{rel} breaks {sorted(found)}: use drivers.kube (get/list_/apply/create/patch/patch_status/"
                       "delete answer None/False for a missing object; kube.path builds paths)")
