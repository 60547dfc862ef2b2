"""Which webhook URLs and addresses Heimdex may send to: the SSRF rules, pure.

A receiver's URL is checked twice: at registration, when its host is a literal address (in any
spelling a resolver or socket would accept: ``2130706433``, ``0177.0.0.1``, ``0x7f.1``,
``[::ffff:127.0.0.1]``), and at every delivery, against each address its name resolves to — the
connection then goes to the address that was checked, so a name cannot resolve to a public
address for the check and a private one for the request (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

import msgspec

from heimdex.domain.errors import WebhookUrlForbidden

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_LENGTH = 2048

# Cloud instance-metadata services: named on their own because they are the classic target.
_METADATA = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack…
    ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
}
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


class WebhookTarget(msgspec.Struct, frozen=True, kw_only=True):
    """A URL taken apart for sending: where to connect and what to say in ``Host``."""

    scheme: Literal["http", "https"]
    host: str
    port: int
    #: the path and query, as given
    target: str
    #: the host as an address when the URL names one literally
    literal: IPAddress | None

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def forbidden_reason(address: IPAddress) -> str | None:
    """Why Heimdex must not connect to ``address`` (``None``: a public unicast address)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is not None:
            return forbidden_reason(embedded)
        if address in ipaddress.ip_network("64:ff9b::/96"):  # NAT64: an IPv4 address inside
            return forbidden_reason(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address in _METADATA:
        return "cloud metadata"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv6Address) and address in ipaddress.ip_network("fc00::/7"):
        return "unique-local"
    if address.is_private:
        return "private"
    if not address.is_global or address.is_reserved:
        return "reserved"
    return None


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an address if it is one in any form ``inet_aton`` accepts (decimal, octal
    and hex parts, one to four of them) or IPv6; ``None`` for a name."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return None
    parts = host.rstrip(".").split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        number = _number(part)
        if number is None:
            return None
        numbers.append(number)
    *leading, last = numbers
    if any(n > 0xFF for n in leading) or last >= 1 << (8 * (4 - len(leading))):
        return None
    value = 0
    for number in leading:
        value = value << 8 | number
    value = value << (8 * (4 - len(leading))) | last
    return ipaddress.IPv4Address(value)


def _number(part: str) -> int | None:
    text = part.lower()
    try:
        if text.startswith("0x"):
            return int(text[2:] or "0", 16)
        if len(text) > 1 and text.startswith("0"):
            return int(text[1:], 8)
        if text.isdigit():
            return int(text)
    except ValueError:
        return None
    return None


def parse_webhook_url(url: str, *, allow_http: bool) -> WebhookTarget:
    """Take a receiver's URL apart, refusing what can never be one (``WebhookUrlForbidden``):
    not http(s) (or http where only https is allowed), credentials in it, no host."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlForbidden(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlForbidden(f"not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookUrlForbidden("the URL must be https://")
    if scheme == "http" and not allow_http:
        raise WebhookUrlForbidden("the URL must be https:// (http is allowed in development)")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlForbidden("the URL must not carry credentials")
    host = (parts.hostname or "").lower()
    if not host:
        raise WebhookUrlForbidden("the URL has no host")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return WebhookTarget(
        scheme="https" if scheme == "https" else "http",
        host=host,
        port=port or (443 if scheme == "https" else 80),
        target=target,
        literal=literal_address(host),
    )


def check_registration(url: str, *, allow_http: bool, allow_private: bool) -> WebhookTarget:
    """What ``POST /v1/webhooks`` checks: the URL's form, and a literal host's address (a name is
    checked when it is resolved, at each delivery)."""
    target = parse_webhook_url(url, allow_http=allow_http)
    if allow_private:
        return target
    if target.host in _LOCAL_NAMES or target.host.endswith(".localhost"):
        raise WebhookUrlForbidden("the URL names this machine (loopback)")
    if target.literal is not None:
        reason = forbidden_reason(target.literal)
        if reason is not None:
            raise WebhookUrlForbidden(f"the URL's address is {reason}")
    return target
