"""A static scan of the dashboard's templates, script and stylesheet: nothing inline that
the Content-Security-Policy would have to allow, and nothing loaded from elsewhere. It
fails the build when a page grows an inline script, an inline event handler, a
javascript: URL, a style attribute or a CDN link."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "operator" / "stratus" / "services" / "dashboard"
TEMPLATES = sorted((ROOT / "templates").glob("*.html"))
SCRIPTS = sorted((ROOT / "static").glob("*.js"))
STYLES = sorted((ROOT / "static").glob("*.css"))

INLINE_HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=", re.I | re.S)
SCRIPT_TAG = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.I | re.S)
STYLE_ATTR = re.compile(r"<[^>]*\sstyle\s*=", re.I | re.S)
STYLE_TAG = re.compile(r"<style\b", re.I)
JS_URL = re.compile(r"javascript:", re.I)
EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?(?:https?:)?//""", re.I)


def test_there_is_something_to_scan():
    assert len(TEMPLATES) >= 10 and SCRIPTS and STYLES


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_template_has_nothing_inline(path):
    text = path.read_text()
    assert not INLINE_HANDLER.search(text), f"{path.name}: inline event handler"
    for attrs, body in SCRIPT_TAG.findall(text):
        assert "src=" in attrs and not body.strip(), f"{path.name}: inline <script>"
        assert re.search(r"""src=["']/static/""", attrs), f"{path.name}: script not served locally"
    assert not STYLE_ATTR.search(text), f"{path.name}: style attribute"
    assert not STYLE_TAG.search(text), f"{path.name}: <style> element"
    assert not JS_URL.search(text), f"{path.name}: javascript: URL"
    assert not EXTERNAL.search(text), f"{path.name}: loads from another origin"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_script_adds_no_inline_code(path):
    text = path.read_text()
    for banned in ("eval(", "new Function", "setAttribute(\"on", "setAttribute('on", "document.write", ".outerHTML",
                   "javascript:", "http://", "https://", "import("):
        assert banned not in text, f"{path.name}: {banned}"
    # One innerHTML, into an inert <template>, of HTML the server rendered with escaping.
    assert text.count("innerHTML") == 1 and "template.innerHTML = data.html" in text


@pytest.mark.parametrize("path", STYLES, ids=lambda p: p.name)
def test_stylesheet_loads_nothing_from_elsewhere(path):
    text = path.read_text()
    assert "@import" not in text and not re.search(r"url\(\s*['\"]?(https?:)?//", text)


def test_scan_catches_what_it_should():
    bad = ['<button onclick="x()">', "<script>alert(1)</script>", '<div style="color:red">', '<a href="javascript:x">',
           '<script src="https://cdn.example/x.js"></script>']
    assert INLINE_HANDLER.search(bad[0]) and SCRIPT_TAG.search(bad[1]) and STYLE_ATTR.search(bad[2])
    assert JS_URL.search(bad[3]) and EXTERNAL.search(bad[4])


def test_dashboard_never_imports_the_controllers():
    import subprocess
    import sys

    code = ("import sys, stratus.services.dashboard, stratus.cli.dashboard; "
            "print(sorted(m for m in sys.modules if m.startswith('stratus.controllers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_dashboard_command_is_registered():
    from click.testing import CliRunner

    from stratus.cli import main

    res = CliRunner().invoke(main, ["dashboard", "--help"])
    assert res.exit_code == 0 and "signed-in user" in res.output
