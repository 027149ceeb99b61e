"""The image egress policy and the format probe: table-driven, no network."""

from __future__ import annotations

import pytest

from stratus.core.egress import EgressPolicy, EgressRefused, parse_cidrs
from stratus.core.image import probe_format

DEFAULT = EgressPolicy.default()


@pytest.mark.parametrize("address, category", [
    ("127.0.0.1", "loopback"),
    ("127.9.9.9", "loopback"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),
    ("169.254.169.254", "link-local (cloud metadata)"),
    ("100.100.100.200", "shared address space (cloud metadata)"),
    ("fd00:ec2::254", "cloud metadata"),
    ("fe80::1%eth0", "link-local"),
    ("0.0.0.0", "this network"),
    ("224.0.0.1", "multicast"),
    ("255.255.255.255", "broadcast"),
])
def test_refused_by_default(address, category):
    with pytest.raises(EgressRefused) as err:
        DEFAULT.check(address)
    assert err.value.category == category


@pytest.mark.parametrize("address", ["93.184.216.34", "10.1.2.3", "192.168.1.10", "2001:db8::1"])
def test_allowed_by_default(address):
    assert str(DEFAULT.check(address)) == address


def test_cluster_ranges_from_the_environment_and_exceptions_win():
    policy = EgressPolicy.from_env({"STRATUS_EGRESS_DENY_CIDRS": "10.96.0.0/12, 10.244.0.0/16",
                                    "STRATUS_EGRESS_ALLOW_CIDRS": "127.0.0.2/32"})
    with pytest.raises(EgressRefused):
        policy.check("10.96.0.1")
    with pytest.raises(EgressRefused):
        policy.check("10.244.3.4")
    assert str(policy.check("127.0.0.2")) == "127.0.0.2"
    with pytest.raises(EgressRefused):
        policy.check("127.0.0.1")
    assert str(policy.check("10.1.0.1")) == "10.1.0.1"


def test_a_bad_cidr_names_the_setting():
    with pytest.raises(ValueError, match="STRATUS_EGRESS_DENY_CIDRS: 'ten' is not a CIDR"):
        parse_cidrs("10.0.0.0/8 ten", "STRATUS_EGRESS_DENY_CIDRS")


@pytest.mark.parametrize("head, fmt", [
    (b"QFI\xfb\x00\x00\x00\x03" + bytes(100), "qcow2"),
    (b"KDMV" + bytes(100), "vmdk"),
    (b"vhdxfile" + bytes(100), "vhdx"),
    (b"conectix" + bytes(100), "vpc"),
    (b"LUKS\xba\xbe" + bytes(100), "luks"),
    (bytes(0x40) + b"\x7f\x10\xda\xbe" + bytes(10), "vdi"),
    (bytes(4096), "raw"),
    (b"", "raw"),
])
def test_format_probe(head, fmt):
    assert probe_format(head) == fmt
