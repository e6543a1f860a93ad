"""Callback URL hosts judged as the HTTP client connects to them: every disguise of a non-public
address is refused, public hosts pass, and what is judged is what yarl hands the connector."""

from __future__ import annotations

import platform
import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address

import idna
import pytest
import yarl
from hypothesis import given, settings
from hypothesis import strategies as st

from service.effects.callback_address import (
    UndeliverableUrlError,
    check_callback_url,
    embedded_ipv4,
    is_public,
    normalise_host,
    parse_address,
    public_answers,
)

UNSPECIFIED_V4 = "0.0.0.0"  # noqa: S104  (a host to refuse, not one to bind)

# Non-public hosts the client could reach, each with the host it is judged as (and called at,
# when private networks are allowed).
DISGUISED_PRIVATE = [
    # loopback
    ("http://127.0.0.1/", "127.0.0.1"),
    ("HTTP://127.0.0.1/", "127.0.0.1"),
    ("https://127.0.0.1:8443/cb", "127.0.0.1"),
    ("http://①②⑦.0.0.1:8080/x", "127.0.0.1"),
    ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", "127.0.0.1"),  # full-width digits
    ("http://127\u30020\u30020\u30021/", "127.0.0.1"),  # ideographic full stop
    ("http://127\uff0e0\uff0e0\uff0e1/", "127.0.0.1"),  # full-width full stop
    ("http://127\uff610\uff610\uff611/", "127.0.0.1"),  # half-width ideographic full stop
    ("http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/", "127.0.0.1"),  # full-width throughout
    ("http://2130706433/", "127.0.0.1"),
    ("http://0x7f000001/", "127.0.0.1"),
    ("http://0X7F000001/", "127.0.0.1"),
    ("http://017700000001/", "127.0.0.1"),
    ("http://0177.0.0.1/", "127.0.0.1"),
    ("http://0x7f.0.0.1/", "127.0.0.1"),
    ("http://0x7f.1/", "127.0.0.1"),
    ("http://127.1/", "127.0.0.1"),
    ("http://127.0.1/", "127.0.0.1"),
    ("http://127.0.0.1./", "127.0.0.1"),
    ("http://①②⑦.0.0.1./", "127.0.0.1"),
    ("http://[::1]/", "::1"),
    ("http://[0:0:0:0:0:0:0:1]/", "::1"),
    ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1"),
    ("http://[::FFFF:7F00:1]/", "::ffff:7f00:1"),
    ("http://[::127.0.0.1]/", "::7f00:1"),
    ("http://[::ffff:0:7f00:1]/", "::ffff:0:7f00:1"),
    ("http://[2002:7f00:1::]/", "2002:7f00:1::"),
    ("http://[64:ff9b::7f00:1]/", "64:ff9b::7f00:1"),
    ("http://[64:ff9b::127.0.0.1]/", "64:ff9b::7f00:1"),
    ("http://[64:ff9b:1:7f00:0:100::]/", "64:ff9b:1:7f00:0:100::"),  # local-use NAT64, /48 layout
    ("http://[64:ff9b:1::7f00:1]/", "64:ff9b:1::7f00:1"),  # local-use NAT64, /96 layout
    ("http://[2001:0:808:808::80ff:fffe]/", "2001:0:808:808::80ff:fffe"),  # Teredo, client 127.0.0.1
    # unspecified
    ("http://0.0.0.0/", UNSPECIFIED_V4),
    ("http://0/", UNSPECIFIED_V4),
    ("http://0x0/", UNSPECIFIED_V4),
    ("http://[::]/", "::"),
    ("http://[::ffff:0.0.0.0]/", "::ffff:0:0"),
    # private 10/8, 172.16/12, 192.168/16
    ("http://10.0.0.1/", "10.0.0.1"),
    ("http://10.1/", "10.0.0.1"),
    ("http://167772161/", "10.0.0.1"),
    ("http://0xa000001/", "10.0.0.1"),
    ("http://①⓪.0.0.1/", "10.0.0.1"),
    ("http://[::ffff:10.0.0.1]/", "::ffff:a00:1"),
    ("http://172.16.0.1/", "172.16.0.1"),
    ("http://172.31.255.255/", "172.31.255.255"),
    ("http://0xac100001/", "172.16.0.1"),
    ("http://0254.16.0.1/", "172.16.0.1"),
    ("http://[2002:ac10:1::]/", "2002:ac10:1::"),
    ("http://192.168.0.1/", "192.168.0.1"),
    ("http://192.168.1/", "192.168.0.1"),
    ("http://0300.0250.0.1/", "192.168.0.1"),
    ("http://0xc0.0xa8.0x0.0x1/", "192.168.0.1"),
    ("http://①⑨②.①⑥⑧.0.1/", "192.168.0.1"),
    ("http://\uff11\uff19\uff12\uff0e\uff11\uff16\uff18\uff0e\uff10\uff0e\uff11/", "192.168.0.1"),
    ("http://[::ffff:192.168.0.1]/", "::ffff:c0a8:1"),
    ("http://[2002:c0a8:1::1]/", "2002:c0a8:1::1"),
    ("http://[64:ff9b::192.168.0.1]/", "64:ff9b::c0a8:1"),
    # link-local and the metadata services
    ("http://169.254.0.1/", "169.254.0.1"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    ("http://①⑥⑨.②⑤④.①⑥⑨.②⑤④/latest/meta-data/", "169.254.169.254"),
    ("http://2852039166/latest/meta-data/", "169.254.169.254"),
    ("http://0xa9fea9fe/", "169.254.169.254"),
    ("http://0251.0376.0251.0376/", "169.254.169.254"),
    ("http://169.254.43518/", "169.254.169.254"),
    ("http://[::ffff:169.254.169.254]/", "::ffff:a9fe:a9fe"),
    ("http://[::ffff:0:a9fe:a9fe]/", "::ffff:0:a9fe:a9fe"),
    ("http://[2002:a9fe:a9fe::]/", "2002:a9fe:a9fe::"),
    ("http://[64:ff9b::a9fe:a9fe]/", "64:ff9b::a9fe:a9fe"),
    ("http://[fe80::1]/", "fe80::1"),
    ("http://[FE80::A9FE:A9FE]/", "fe80::a9fe:a9fe"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254"),
    # shared address space (CGNAT)
    ("http://100.64.0.1/", "100.64.0.1"),
    ("http://100.127.255.254/", "100.127.255.254"),
    ("http://0x64400001/", "100.64.0.1"),
    ("http://[::ffff:100.64.0.1]/", "::ffff:6440:1"),
    # other non-public IPv6 blocks
    ("http://[fec0::1]/", "fec0::1"),
    ("http://[fc00::1]/", "fc00::1"),
    ("http://[ff02::1]/", "ff02::1"),
    ("http://[2001:db8::1]/", "2001:db8::1"),
    # other non-public IPv4 blocks
    ("http://198.18.0.1/", "198.18.0.1"),
    ("http://192.0.2.1/", "192.0.2.1"),
    ("http://224.0.0.1/", "224.0.0.1"),
    ("http://255.255.255.255/", "255.255.255.255"),
    ("http://4294967295/", "255.255.255.255"),
    # localhost names
    ("http://localhost/", "localhost"),
    ("http://LOCALHOST:8080/", "localhost"),
    ("http://localhost./", "localhost."),
    ("http://localhost.localdomain/", "localhost.localdomain"),
    ("http://api.localhost/", "api.localhost"),
    ("http://API.LocalHost./", "api.localhost."),
    ("http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/", "localhost"),  # full-width
    ("http://Ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/", "localhost"),
    ("http://ip6-localhost/", "ip6-localhost"),
]

# Refused whatever the settings: the client cannot call them, or they carry userinfo.
UNDELIVERABLE = [
    ("http://example.com@127.0.0.1/", "userinfo"),
    ("http://user:secret@127.0.0.1/", "userinfo"),
    ("http://@127.0.0.1/", "userinfo"),
    ("http://:@127.0.0.1/", "userinfo"),
    ("http://www.example.com:80@127.0.0.1/", "userinfo"),
    ("http://127.0.0.1%2f@example.com/", "userinfo"),
    ("http://example.com\\@127.0.0.1/", "unparsable"),
    ("http://example.com\uff20127.0.0.1/", "unparsable"),  # full-width commercial at
    ("http://%31%32%37.0.0.1/", "not a valid name"),
    ("http://127%2e0%2e0%2e1/", "not a valid name"),
    ("http://localhost%2e/", "not a valid name"),
    ("http://127.0.0.1 /", "not a valid name"),
    ("http://127.0.0.1 .example.com/", "not a valid name"),
    ("http://127.0.0.1../", "not a valid name"),
    ("http://[fe80::1%25eth0]/", "zone id"),
    ("http://[127.0.0.1]/", "unparsable"),
    ("http://[\uff1a\uff1a\uff11]/", "unparsable"),  # full-width ::1
    ("http://[v1.localhost]/", "IPv6"),
    ("http://1.2.3.4.5/", "ends in a number"),
    ("http://256.0.0.1/", "ends in a number"),
    ("http://127.0.0.0x/", "ends in a number"),
    ("http://08.0.0.1/", "ends in a number"),
    ("http://\u0661\u0662\u0667.0.0.1/", "internationalised"),  # Arabic-Indic digits
    ("http:///callback", "no host"),
    ("http:/127.0.0.1/", "no host"),
    ("ftp://127.0.0.1/", "http and https"),
    ("file:///etc/passwd", "http and https"),
    ("gopher://127.0.0.1:6379/_INFO", "http and https"),
    ("javascript:alert(1)", "http and https"),
    ("http://127.0.0.1:99999/", "unparsable"),
]

PUBLIC = [
    ("https://example.com/cb", "example.com"),
    ("https://EXAMPLE.COM:8443/cb", "example.com"),
    ("https://\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com/cb", "example.com"),
    ("https://example.com./cb", "example.com."),
    ("https://api.example.com/hooks?x=1#frag", "api.example.com"),
    ("https://bücher.de/cb", "xn--bcher-kva.de"),
    ("https://xn--bcher-kva.de/cb", "xn--bcher-kva.de"),
    ("https://r3--sn-abc.googlevideo.com/", "r3--sn-abc.googlevideo.com"),
    ("https://my_host.example.com/", "my_host.example.com"),
    ("https://localhost.example.com/", "localhost.example.com"),
    ("http://127.0.0.1.nip.io/", "127.0.0.1.nip.io"),  # a name: judged at connect time
    ("http://93.184.216.34/", "93.184.216.34"),
    ("http://⑨③.①⑧④.②①⑥.③④/", "93.184.216.34"),
    ("http://0x5db8d822/", "93.184.216.34"),
    ("http://8.8.8.8:8080/cb", "8.8.8.8"),
    ("http://[2606:2800:220:1:248:1893:25c8:1946]/", "2606:2800:220:1:248:1893:25c8:1946"),
    ("http://[::ffff:93.184.216.34]/", "::ffff:5db8:d822"),
    ("http://[2002:5db8:d822::1]/", "2002:5db8:d822::1"),
    ("http://[64:ff9b::93.184.216.34]/", "64:ff9b::5db8:d822"),
    ("http://[2001:4860:4860::8888]/", "2001:4860:4860::8888"),
]


def judged_host(url: str) -> str | IPv4Address | IPv6Address:
    """The host of a URL check_callback_url returned: the address for an IP literal (Python
    releases print some IPv6 addresses differently), the name otherwise."""
    host = normalise_host(url)
    address = parse_address(host)
    return host if address is None else address


def expected_host(host: str) -> str | IPv4Address | IPv6Address:
    return host if parse_address(host) is None else ip_address(host)


class TestRefusal:
    @pytest.mark.parametrize(("url", "host"), DISGUISED_PRIVATE)
    def test_a_disguised_non_public_host_is_refused(self, url: str, host: str):
        with pytest.raises(UndeliverableUrlError, match=r"non-public|localhost"):
            check_callback_url(url, allow_private=False)

    @pytest.mark.parametrize(("url", "reason"), UNDELIVERABLE)
    @pytest.mark.parametrize("allow_private", [False, True])
    def test_an_undeliverable_url_is_refused_whatever_the_settings(self, url: str, reason: str, allow_private: bool):
        with pytest.raises(UndeliverableUrlError, match=reason):
            check_callback_url(url, allow_private=allow_private)

    def test_the_error_is_a_value_error(self):
        assert issubclass(UndeliverableUrlError, ValueError)


class TestAcceptance:
    @pytest.mark.parametrize(("url", "host"), PUBLIC)
    def test_a_public_host_passes(self, url: str, host: str):
        assert judged_host(check_callback_url(url, allow_private=False)) == expected_host(host)

    @pytest.mark.parametrize(("url", "host"), DISGUISED_PRIVATE)
    def test_a_private_host_passes_when_private_networks_are_allowed(self, url: str, host: str):
        assert judged_host(check_callback_url(url, allow_private=True)) == expected_host(host)

    @pytest.mark.parametrize(("url", "host"), [(url, host) for url, host in PUBLIC] + DISGUISED_PRIVATE)
    def test_the_client_connects_to_the_host_that_was_judged(self, url: str, host: str):
        """The connector reads yarl's raw_host: on the URL handed back it is the judged host, byte
        for byte, and an IP literal in the URL as given already reaches the judged address."""
        normalised = check_callback_url(url, allow_private=True)
        judged = normalise_host(normalised)
        client = yarl.URL(normalised)
        assert client.raw_host == judged
        assert client.host == (idna.decode(judged) if "xn--" in judged else judged)
        assert judged_host(normalised) == expected_host(host)
        assert client.path == yarl.URL(url).path
        assert client.port == yarl.URL(url).port
        expected = expected_host(host)
        if not isinstance(expected, str):
            given_host = yarl.URL(url).raw_host
            assert given_host is not None
            assert parse_address(given_host) == expected

    @pytest.mark.parametrize(("url", "host"), [(url, host) for url, host in PUBLIC] + DISGUISED_PRIVATE)
    def test_normalising_twice_changes_nothing(self, url: str, host: str):
        normalised = check_callback_url(url, allow_private=True)
        assert check_callback_url(normalised, allow_private=True) == normalised

    def test_the_attack_urls_are_rewritten_to_what_yarl_would_have_called(self):
        assert check_callback_url("http://①②⑦.0.0.1:8080/x", allow_private=True) == "http://127.0.0.1:8080/x"
        assert check_callback_url("http://0x7f.1/a?b=c", allow_private=True) == "http://127.0.0.1/a?b=c"
        assert check_callback_url("http://[::127.0.0.1]/", allow_private=True) == "http://[::7f00:1]/"


class TestParseAddress:
    @pytest.mark.parametrize(("host", "address"), [
        ("127.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"), ("0x7f.0.1", "127.0.0.1"), ("0.0x7f.00.1", "0.127.0.1"),
        ("127.0.0.1.", "127.0.0.1"), ("①②⑦.0.0.1", "127.0.0.1"), ("127\u30020\u30020\u30021", "127.0.0.1"),
        ("[::1]", "::1"), ("::1", "::1"), ("[::FFFF:127.0.0.1]", "::ffff:7f00:1"), ("0", UNSPECIFIED_V4),
    ])
    def test_every_notation(self, host: str, address: str):
        assert parse_address(host) == ip_address(address)

    @pytest.mark.parametrize("host", ["example.com", "localhost", "127.0.0.1.nip.io", "xn--bcher-kva.de", "a1"])
    def test_a_name_is_no_address(self, host: str):
        assert parse_address(host) is None

    @pytest.mark.parametrize("host", [
        "fe80::1%eth0", "[fe80::1%25eth0]", "[example.com]", "::g", "1.2.3.4.5", "256.1", "1.0x", "09", "1..1",
    ])
    def test_what_can_only_be_meant_as_an_address_but_is_none_is_refused(self, host: str):
        with pytest.raises(UndeliverableUrlError):
            parse_address(host)


class TestEmbeddedIPv4:
    @pytest.mark.parametrize(("address", "ipv4"), [
        ("::ffff:127.0.0.1", "127.0.0.1"),            # mapped
        ("::127.0.0.1", "127.0.0.1"),                 # compatible
        ("::ffff:0:7f00:1", "127.0.0.1"),             # SIIT
        ("2002:7f00:1::", "127.0.0.1"),               # 6to4
        ("2002:c0a8:101:1::1", "192.168.1.1"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),    # NAT64, well-known prefix
        ("64:ff9b:1:7f00:0:100::", "127.0.0.1"),      # NAT64, local-use /48
        ("64:ff9b:1:a9fe:a9:fe00::", "169.254.169.254"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"),  # Teredo (RFC 4380's example)
    ])
    def test_every_embedding(self, address: str, ipv4: str):
        assert embedded_ipv4(IPv6Address(address)) == IPv4Address(ipv4)

    @pytest.mark.parametrize("address", ["::", "::1", "2606:2800:220:1:248:1893:25c8:1946", "fe80::1", "fd00:ec2::254"])
    def test_no_embedding(self, address: str):
        assert embedded_ipv4(IPv6Address(address)) is None


class TestIsPublic:
    @pytest.mark.parametrize(("address", "public"), [
        ("93.184.216.34", True), ("8.8.8.8", True), ("1.1.1.1", True), ("100.63.255.255", True),
        ("100.128.0.0", True), ("172.32.0.1", True), ("198.20.0.1", True),
        ("127.0.0.1", False), ("10.255.255.255", False), ("172.16.0.0", False), ("192.168.255.255", False),
        ("169.254.169.254", False), ("100.64.0.0", False), (UNSPECIFIED_V4, False), ("0.1.2.3", False),
        ("198.18.0.0", False), ("198.19.255.255", False), ("192.0.2.1", False), ("198.51.100.1", False),
        ("203.0.113.1", False), ("224.0.0.251", False), ("239.255.255.250", False), ("240.0.0.1", False),
        ("255.255.255.255", False), ("192.0.0.8", False), ("192.88.99.1", False),
        ("2606:2800:220:1:248:1893:25c8:1946", True), ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True), ("2002:808:808::", True), ("64:ff9b::808:808", True),
        ("::", False), ("::1", False), ("fe80::1", False), ("febf::1", False), ("fec0::1", False),
        ("feff::1", False), ("fc00::1", False), ("fd00:ec2::254", False), ("ff02::1", False),
        ("2001:db8::1", False), ("3fff::1", False), ("2001:2::1", False), ("100::1", False),
        ("5f00::1", False), ("::ffff:10.0.0.1", False), ("2002:a00:1::", False),
        ("64:ff9b::a00:1", False), ("64:ff9b:1::a00:1", False), ("64:ff9b:1:808:8:800:a00:1", False),
        ("2001:0:808:808::f7f7:f7f7", True),    # Teredo: server and client 8.8.8.8
        ("2001:0:a00:1::f7f7:f7f7", False),     # Teredo: server 10.0.0.1
        ("2001:0:808:808::f5ff:fffe", False),   # Teredo: client 10.0.0.1
    ])
    def test_the_table(self, address: str, public: bool):
        assert is_public(ip_address(address)) is public

    def test_a_zone_id_is_never_public(self):
        assert is_public(IPv6Address("2001:4860:4860::8888%eth0")) is False


class TestPublicAnswers:
    def test_only_public_answers_are_kept(self):
        answers = [
            {"hostname": "h", "host": host, "port": 443, "family": socket.AF_INET, "proto": 0, "flags": 0}
            for host in ["93.184.216.34", "127.0.0.1", "::ffff:127.0.0.1", "fe80::1%eth0", "2606:4700::1111",
                         "64:ff9b::a9fe:a9fe", "not-an-address", "10.0.0.1"]
        ]
        kept = public_answers(answers)
        assert [answer["host"] for answer in kept] == ["93.184.216.34", "2606:4700::1111"]
        assert kept[0] is answers[0]

    def test_an_answer_without_a_host_is_dropped(self):
        assert public_answers([{"hostname": "h"}, {"host": 7}]) == []


def notations(address: IPv4Address) -> dict[str, str]:
    """Hosts (as they appear in a URL) that reach `address`."""
    number = int(address)
    octets = address.packed
    return {
        "dotted": str(address),
        "decimal": str(number),
        "hex": hex(number),
        "octal dotted": ".".join(f"0{octet:o}" for octet in octets),
        "short": f"{octets[0]}.{number & 0xFFFFFF}",
        "circled": ".".join("".join(chr(0x2460 + int(d) - 1) if d != "0" else "\u24ea" for d in str(o)) for o in octets),
        "full-width": "\uff0e".join("".join(chr(0xFF10 + int(d)) for d in str(o)) for o in octets),
        "mapped": f"[::ffff:{address}]",
        "SIIT": f"[::ffff:0:{address}]",
        "6to4": f"[2002:{number >> 16:x}:{number & 0xFFFF:x}::1]",
        "NAT64": f"[64:ff9b::{address}]",
        "Teredo": f"[2001:0:808:808:0:0:{~number >> 16 & 0xFFFF:x}:{~number & 0xFFFF:x}]",
    }


PRIVATE_NETWORKS = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
                    "100.64.0.0/10", "0.0.0.0/8"]


def addresses_in(network: IPv4Network) -> st.SearchStrategy[IPv4Address]:
    return st.integers(0, network.num_addresses - 1).map(lambda offset: network[offset])


def verdict(url: str) -> bool:
    try:
        check_callback_url(url, allow_private=False)
    except UndeliverableUrlError:
        return False
    return True


class TestProperties:
    @settings(max_examples=300, deadline=None, database=None)
    @given(st.ip_addresses(v=4))
    def test_every_notation_gets_the_plain_address_verdict(self, address: IPv4Address):
        plain = verdict(f"http://{address}/cb")
        assert plain is is_public(address)
        for notation, host in notations(address).items():
            assert verdict(f"http://{host}/cb") is plain, notation
            if ":" not in host:  # IPv4 notations come back as the plain dotted quad
                assert judged_host(check_callback_url(f"http://{host}/cb", allow_private=True)) == address

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.one_of(*(addresses_in(IPv4Network(net)) for net in PRIVATE_NETWORKS)))
    def test_no_notation_of_a_private_address_passes(self, address: IPv4Address):
        for notation, host in notations(address).items():
            assert not verdict(f"http://{host}/cb"), notation

    @pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="compares with glibc's inet_aton")
    @settings(max_examples=500, deadline=None, database=None)
    @given(st.lists(
        st.one_of(
            st.integers(0, 0xFFFFFFFF).map(str),
            st.integers(0, 0xFFFFFFFF).map(hex),
            st.integers(0, 0xFFFFFFFF).map(lambda n: f"0{n:o}"),
            st.text("0123456789abcdefxX", min_size=1, max_size=6),
        ),
        min_size=1, max_size=5,
    ).map(".".join))
    def test_the_ipv4_notations_are_those_inet_aton_reads(self, host: str):
        try:
            expected: IPv4Address | None = IPv4Address(socket.inet_aton(host))
        except OSError:
            expected = None
        try:
            parsed = parse_address(host)
        except UndeliverableUrlError:
            parsed = None
        assert parsed == expected
