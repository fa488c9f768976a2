"""Which host names and addresses mean this machine: the one rule behind `serve`'s refusal to
open an unauthenticated API beyond loopback and the open API's Host check."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether `host` (an address, IPv6 in brackets or not, or a name) is this machine only.

    True for loopback addresses (127.0.0.0/8, ::1), `localhost` and names under `.localhost`,
    in any case: RFC 6761 keeps those names for loopback, and browsers (and systemd's
    resolver) answer them without asking DNS, so no DNS rebinding can reach them through
    one. Any other name may resolve to anything: False."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
