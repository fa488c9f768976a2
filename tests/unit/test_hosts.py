"""Which hosts are loopback: one rule for `serve`'s exposure check and the open API's Host check."""

from __future__ import annotations

import pytest

from service.core.hosts import is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),  # all of 127.0.0.0/8
        ("::1", True),
        ("[::1]", True),  # as in a URL's host
        ("localhost", True),
        ("LocalHost", True),
        ("app.localhost", True),  # RFC 6761: never asked of DNS
        ("[localhost]", True),
        ("0.0.0.0", False),  # every interface
        ("::", False),
        ("", False),
        ("192.168.1.10", False),
        ("10.0.0.1", False),
        ("backups.example.com", False),  # a name may resolve to anything
        ("localhost.example.com", False),
        ("notlocalhost", False),
        ("127.0.0.1.nip.io", False),  # DNS that answers 127.0.0.1 today, anything tomorrow
        ("::ffff:8.8.8.8", False),
    ],
)
def test_loopback(host, loopback):
    assert is_loopback(host) is loopback
