"""`stratus meter export|verify` on a directory ledger, without a cluster (keys from a JWKS file)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from stratus.cli.meter import meter
from stratus.core.ledger import Keyring, Ledger, Signer
from stratus.core.metering import UsageTracker
from stratus.drivers.ledger_store import DirectoryLedgerStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
H = 3600


@pytest.fixture
def ledger(tmp_path):
    root = tmp_path / "ledger"
    signer = Signer.generate()
    led = Ledger(DirectoryLedgerStore(root, fsync=False), signer)
    tr = UsageTracker(interval=H)
    tr.observe("acme", "srv", "Server", {"vcpu-seconds": 2}, True, T0)
    tr.observe("acme", "srv", "Server", {"vcpu-seconds": 2}, False, int(T0.timestamp()) + H + 600)
    for i in tr.due(int(T0.timestamp()) + 3 * H):
        led.append(tr.close(*i))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(Keyring([signer]).to_jwks()))
    return root, jwks


def run(*args):
    return CliRunner().invoke(meter, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    "window, want_vcpu",
    [((), 2 * (H + 600)), (("--from", "2026-01-01T01:00:00Z"), 2 * 600), (("--to", "2026-01-01T01:00:00Z"), 2 * H),
     (("--from", "2026-01-01", "--to", "2026-01-02"), 2 * (H + 600))],
    ids=["all", "from", "to", "whole-day"],
)
def test_export_json_totals_by_window(ledger, window, want_vcpu):
    root, jwks = ledger
    res = run("export", "--project", "acme", "--format", "json", "--ledger-dir", str(root), "--jwks", str(jwks), *window)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["totals"]["acme"]["vcpu-seconds"] == want_vcpu


def test_export_csv_and_price_list(ledger, tmp_path):
    root, jwks = ledger
    res = run("export", "--project", "acme", "--ledger-dir", str(root), "--jwks", str(jwks))
    rows = res.output.splitlines()
    assert rows[0] == "project,record,seq,start,end,meter,quantity" and len(rows) == 3
    prices = tmp_path / "prices.yaml"
    prices.write_text("currency: EUR\nrates:\n  vcpu-seconds: {amount: 5, per: 3600}\n")
    res = run("export", "--project", "acme", "--format", "json", "--ledger-dir", str(root), "--jwks", str(jwks),
              "--price-list", str(prices))
    cost = json.loads(res.output)["cost"]["acme"]
    assert cost == {"currency": "EUR", "lines": {"vcpu-seconds": 12}, "total": 12, "unpriced": []}  # 2.33 vCPU-h


@pytest.mark.parametrize(
    "damage, problem, index",
    [("edit", "BadSignature", 1), ("delete", "Gap", 1), ("swap", "Reordered", 0)],
)
def test_verify_names_the_first_bad_record_and_export_refuses(ledger, damage, problem, index):
    root, jwks = ledger
    assert run("verify", "--ledger-dir", str(root), "--jwks", str(jwks)).output.startswith("OK: 3 records")
    files = sorted(root.glob("acme/*/*.json"))
    for f in files:
        f.chmod(0o644)
    if damage == "edit":
        data = files[1].read_bytes()
        files[1].write_bytes(data.replace(b'"seq":1', b'"seq":7'))
    elif damage == "delete":
        files[1].unlink()
    else:
        a, b = files[0].read_bytes(), files[1].read_bytes()
        files[0].write_bytes(b)
        files[1].write_bytes(a)
    res = run("verify", "--ledger-dir", str(root), "--jwks", str(jwks))
    assert res.exit_code == 1 and f"record #{index}" in res.output and problem in res.output, res.output
    res = CliRunner().invoke(meter, ["export", "--project", "acme", "--ledger-dir", str(root), "--jwks", str(jwks)])
    assert res.exit_code != 0 and "does not verify" in res.output


def test_verify_needs_the_right_keys(ledger, tmp_path):
    root, _ = ledger
    other = tmp_path / "other.json"
    other.write_text(json.dumps(Keyring([Signer.generate()]).to_jwks()))
    res = run("verify", "--ledger-dir", str(root), "--jwks", str(other))
    assert res.exit_code == 1 and "UnknownKey" in res.output
