"""The SSRF rules: which receiver URLs and addresses Heimdex refuses, in every spelling."""

from __future__ import annotations

import ipaddress

import pytest

from heimdex.domain.errors import WebhookUrlForbidden
from heimdex.domain.webhook_urls import check_registration, forbidden_reason, literal_address

FORBIDDEN_URLS = [
    "https://127.0.0.1/hook",
    "https://127.1/hook",
    "https://2130706433/hook",  # decimal 127.0.0.1
    "https://0177.0.0.1/hook",  # octal
    "https://0x7f.0.0.1/hook",  # hex
    "https://0x7f000001/hook",
    "https://017700000001/hook",
    "https://localhost/hook",
    "https://api.localhost/hook",
    "https://0.0.0.0/hook",
    "https://0/hook",
    "https://10.0.0.5/hook",
    "https://172.16.3.4/hook",
    "https://192.168.1.1/hook",
    "https://100.64.0.1/hook",  # carrier-grade NAT
    "https://169.254.169.254/latest/meta-data/",  # cloud metadata
    "https://169.254.1.1/hook",  # link-local
    "https://224.0.0.1/hook",  # multicast
    "https://255.255.255.255/hook",
    "https://[::1]/hook",
    "https://[::]/hook",
    "https://[fe80::1]/hook",
    "https://[fd00:ec2::254]/hook",  # AWS metadata over IPv6
    "https://[fc00::1]/hook",  # unique-local
    "https://[ff02::1]/hook",  # multicast
    "https://[::ffff:127.0.0.1]/hook",  # v4-mapped
    "https://[::ffff:169.254.169.254]/hook",
    "https://[::ffff:7f00:1]/hook",
    "https://[64:ff9b::a00:1]/hook",  # NAT64 of 10.0.0.1
    "https://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
    "ftp://hooks.example.com/hook",
    "file:///etc/passwd",
    "gopher://hooks.example.com/",
    "https://user:pass@hooks.example.com/hook",
    "https:///hook",
    "https://hooks.example.com:99999/hook",
]


@pytest.mark.parametrize("url", FORBIDDEN_URLS)
def test_forbidden_urls_are_refused(url: str) -> None:
    with pytest.raises(WebhookUrlForbidden):
        check_registration(url, allow_http=True, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/heimdex",
        "https://93.184.215.14/hook",
        "https://[2606:4700::6810:84e5]/hook",
        "https://hooks.example.com:8443/a?b=c",
    ],
)
def test_public_urls_are_accepted(url: str) -> None:
    check_registration(url, allow_http=False, allow_private=False)


def test_http_only_where_allowed() -> None:
    check_registration("http://hooks.example.com/", allow_http=True, allow_private=False)
    with pytest.raises(WebhookUrlForbidden, match="https"):
        check_registration("http://hooks.example.com/", allow_http=False, allow_private=False)


def test_private_networks_allowed_when_asked() -> None:
    check_registration("http://127.0.0.1:9000/hook", allow_http=True, allow_private=True)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("192.168.257", "192.168.1.1"),
        ("hooks.example.com", None),
        ("1.2.3.4.5", None),
        ("08.1.1.1", None),  # not octal: inet_aton refuses it too
    ],
)
def test_literal_addresses_in_every_spelling(host: str, address: str | None) -> None:
    parsed = literal_address(host)
    assert (None if parsed is None else str(parsed)) == address


def test_metadata_addresses_are_named() -> None:
    assert forbidden_reason(ipaddress.ip_address("169.254.169.254")) == "cloud metadata"
    assert forbidden_reason(ipaddress.ip_address("fd00:ec2::254")) == "cloud metadata"
    assert forbidden_reason(ipaddress.ip_address("8.8.8.8")) is None
