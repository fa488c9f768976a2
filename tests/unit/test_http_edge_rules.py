"""The pure rules of the HTTP edge: which Host headers are well formed, how many connections fit
the open-file limit, how many log lines malformed requests may cost, which errors are the
client's."""

from __future__ import annotations

import resource

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, ContentEncodingError

from service.http.api.errors import client_fault
from service.http.wellformed import host_problem
from service.logs import LogThrottle
from service.runtime.server import ACCEPT_BACKLOG, RESERVED_DESCRIPTORS, connection_limit


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:8080", "127.0.0.1:1", "[::1]", "[::1]:8080", "backups.example.com",
     "xn--bcher-kva.example", "my_host:65535", "a:"],
)  # fmt: skip
def test_well_formed_hosts(host):
    assert host_problem(host) is None


@pytest.mark.parametrize(
    ("host", "says"),
    [("a:b", "host name"), ("x:99999", "out of range"), ("[::1]:x", "host name"),
     ("[zz]", "host name"), ("[1:2:3:4:5:6:7:8:9]", "IPv6"), ("a b", "host name"),
     ("evil.example/x", "host name"),
     ("a@b", "host name"), ("a?b", "host name"), ("", "host name"), (":80", "host name"),
     ("\udcff", "host name"), ("xn--a.b", "not a valid host name"), ("x" * 300, "host name")],
)  # fmt: skip
def test_malformed_hosts(host, says):
    problem = host_problem(host)
    assert problem is not None and says in problem


def test_connection_limit_fits_the_open_file_limit():
    # One accept batch holds descriptors until each connection is admitted or refused.
    assert connection_limit(1000, 1024) == 1024 - RESERVED_DESCRIPTORS - ACCEPT_BACKLOG
    assert connection_limit(1000, 1_048_576) == 1000
    assert connection_limit(1000, resource.RLIM_INFINITY) == 1000
    assert connection_limit(50, 1024) == 50
    assert connection_limit(1000, 100) == 4  # never none at all


def test_log_throttle_keeps_a_burst_a_window_and_counts_the_rest():
    now = [0.0]
    throttle = LogThrottle(burst=3, window=60, clock=lambda: now[0])
    assert [throttle.allow() for _ in range(5)] == [0, 0, 0, None, None]
    now[0] = 59.9
    assert throttle.allow() is None
    now[0] = 60.0
    assert throttle.allow() == 3  # the three left out, told with the next line written
    assert throttle.allow() == 0


def test_client_faults_are_told_apart_from_bugs():
    encoding = ContentEncodingError("Can not decode content-encoding: gzip")
    wrapped = web.RequestPayloadError("400, message:\n  Can not decode content-encoding: gzip")
    wrapped.__cause__ = encoding
    assert client_fault(encoding) == (
        "the request could not be read: Can not decode content-encoding: gzip"
    )
    assert client_fault(wrapped) == client_fault(encoding)
    assert client_fault(BadHttpMessage("Invalid header token:\n\n  b'x'\n   ^")) == (
        "the request could not be read: Invalid header token"
    )
    assert client_fault(ValueError("a bug")) is None
    assert client_fault(ConnectionResetError()) is None
