"""Outbound HTTP to a URL an admin typed: only to the public internet.

A webhook endpoint is a URL saved in the admin, and the worker that posts to it sits
inside our network: pointed at 169.254.169.254 (a cloud's metadata service, which hands
out credentials), fd00:ec2::254, metadata.google.internal, localhost or a private
address, it would make our workers reach what the internet cannot. So a target must
resolve only to global addresses, both when it is saved and when a message is sent; the
send then connects to the very address it checked (`PinnedAdapter`), so a name that
resolves differently a moment later (DNS rebinding) cannot slip past.

WEBHOOK_ALLOW_PRIVATE_TARGETS turns the address checks off (the tests' receiver is on
loopback).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, TypeVar
from urllib.parse import urlsplit

from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_Connection = TypeVar("_Connection", bound=HTTPConnection)

# Names that are private by definition, whatever a resolver answers for them: cloud
# metadata services and the special-use domains of RFC 6761 / 6762 and ICANN's .internal.
PRIVATE_NAMES = {"localhost", "metadata", "metadata.goog", "metadata.google.internal", "instance-data"}
PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")


class TargetRefused(Exception):
    """The URL points somewhere our workers must not post to; the message says why."""


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))  # RFC 6052, RFC 8215


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, which a gateway or the host itself
    may reach it through: IPv4-mapped and IPv4-compatible, 6to4, Teredo (its server and
    its client) and NAT64."""
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo is not None:
        found += ip.teredo
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d (:: and ::1 are themselves)
        found.append(low32)
    if any(ip in network for network in _NAT64):
        found.append(low32)
    return found


def _address_refusal(address: str) -> str:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope id is no part of it
    if isinstance(ip, ipaddress.IPv6Address):
        for inner in embedded_ipv4(ip):
            if reason := _address_refusal(str(inner)):
                return f"{address} embeds {inner}, and {reason}"
    if ip.is_global and not ip.is_multicast:
        return ""
    kind = next(
        (
            name
            for name in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved")
            if getattr(ip, f"is_{name}")
        ),
        "non-public",
    )
    return f"{address} is a {kind.replace('_', '-')} address"


def target_address(url: str) -> str:
    """The address to connect to for `url`, after checking the name and every address it
    resolves to; raises TargetRefused with the reason."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("the URL must be http:// or https:// with a host name")
    host = parts.hostname.rstrip(".").lower()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TargetRefused("the URL's port is not a number from 0 to 65535") from None
    allow_private = settings.WEBHOOK_ALLOW_PRIVATE_TARGETS
    if not allow_private and (host in PRIVATE_NAMES or host.endswith(PRIVATE_SUFFIXES)):
        raise TargetRefused(f"{host} is a private or metadata host name")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"{host} does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        for address in addresses:
            if reason := _address_refusal(address):
                raise TargetRefused(f"{host} resolves to {reason}; only public addresses are allowed")
    return addresses[0]


def _pinned(base: type[_Connection], address: str) -> type[_Connection]:
    class Pinned(base):  # type: ignore[valid-type,misc]
        _dns_host: str  # assigned only in HTTPConnection's host setter, so mypy cannot infer it

        def _new_conn(self) -> Any:
            # urllib3 opens the socket to `_dns_host`, which is also the `host` that the
            # Host header, the TLS server name and the certificate check read: it is the
            # checked address only while the socket opens.
            host, self._dns_host = self._dns_host, address
            try:
                return super()._new_conn()
            finally:
                self._dns_host = host

    return Pinned


class PinnedAdapter(HTTPAdapter):
    """requests' adapter that connects to one given address, whatever the URL's host
    resolves to now; the Host header, TLS server name and certificate check still use
    the URL's host name. (Written against the urllib3 version requirements.txt pins;
    tests/test_webhooks.py checks the address and the Host header.)"""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        pinned_http, pinned_https = _pinned(HTTPConnection, self.address), _pinned(HTTPSConnection, self.address)

        class Http(HTTPConnectionPool):
            ConnectionCls = pinned_http

        class Https(HTTPSConnectionPool):
            ConnectionCls = pinned_https

        self.poolmanager.pool_classes_by_scheme = {"http": Http, "https": Https}
