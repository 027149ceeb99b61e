"""Where the operator may fetch from on a user's behalf (Image sources): an egress policy.

An Image's ``spec.source.http.url`` is fetched from inside the cluster, with the operator's
network position. Without a policy that is a server-side request forgery probe: a user
could make the operator fetch its own metrics, a cloud metadata service, or a Service
inside the cluster. So every connection the importer opens (redirects included) goes to
an address this policy allows, decided on the resolved address, and the connection is
made to exactly that address (no second lookup that DNS rebinding could change).

Default: refused are loopback, "this network", link-local (which holds the cloud metadata
addresses 169.254.169.254 and fd00:ec2::254 is refused explicitly), shared address space
100.64.0.0/10 (Alibaba's metadata lives there), multicast, reserved and broadcast, plus
the cluster's own Pod and Service ranges, which the operator cannot know by itself: the
chart passes them (``STRATUS_EGRESS_DENY_CIDRS``). Private ranges (10/8, 172.16/12,
192.168/16) are allowed, because image mirrors often live there; deny them with
``STRATUS_EGRESS_DENY_CIDRS`` where they should not be reached. ``STRATUS_EGRESS_ALLOW_CIDRS``
makes exceptions that win over every deny (the local test bench serves images on
127.0.0.2).

Pure: a decision about addresses. Resolution and connection are in drivers/importer.py.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: (range, what it is), refused unless an allow entry covers the address.
DEFAULT_DENY: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "this network"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("100.64.0.0/10", "shared address space (cloud metadata)"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("fd00:ec2::254/128", "cloud metadata"),
    ("ff00::/8", "multicast"),
)


class EgressRefused(Exception):
    """The address is one the policy refuses; ``category`` says which range."""

    def __init__(self, address: str, category: str) -> None:
        super().__init__(f"{address} is in a refused range ({category})")
        self.address = address
        self.category = category


def parse_cidrs(value: str, source: str) -> tuple[Network, ...]:
    """Comma- or space-separated CIDRs; a bad entry is an error naming it and ``source``."""
    out = []
    for word in value.replace(",", " ").split():
        try:
            out.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            raise ValueError(f"{source}: {word!r} is not a CIDR (e.g. 10.96.0.0/12)") from None
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class EgressPolicy:
    deny: tuple[tuple[Network, str], ...]
    allow: tuple[Network, ...] = ()

    @classmethod
    def default(cls, extra_deny: tuple[Network, ...] = (), allow: tuple[Network, ...] = ()) -> EgressPolicy:
        deny = tuple((ipaddress.ip_network(c), what) for c, what in DEFAULT_DENY)
        deny += tuple((n, "denied by the operator's egress policy") for n in extra_deny)
        return cls(deny, allow)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> EgressPolicy:
        env = dict(os.environ if env is None else env)
        return cls.default(parse_cidrs(env.get("STRATUS_EGRESS_DENY_CIDRS", ""), "STRATUS_EGRESS_DENY_CIDRS"),
                           parse_cidrs(env.get("STRATUS_EGRESS_ALLOW_CIDRS", ""), "STRATUS_EGRESS_ALLOW_CIDRS"))

    def check(self, address: str) -> Address:
        """The address, when it may be connected to; EgressRefused otherwise."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(ip in n for n in self.allow if n.version == ip.version):
            return ip
        for network, what in self.deny:
            if network.version == ip.version and ip in network:
                raise EgressRefused(str(ip), what)
        return ip
