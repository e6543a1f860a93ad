"""Whether a client's callback URL may be called: the host judged as the HTTP client will see it.

A callback URL is the client's choice, so calling it is a server-side request forgery (SSRF) risk:
a URL naming the loopback interface, a private network or the cloud metadata service would make
this service send signed requests into its own network. The check at start only works if it
judges the host the HTTP client will actually connect to, and the two used to disagree:
`urlsplit(url).hostname` returned `①②⑦.0.0.1`, `127。0。0。1` or 127.0.0.1 in full-width digits
(U+FF10 to U+FF19) verbatim, no address parser recognised them, so they passed as names; yarl
(aiohttp's URL library) then ran the host through IDNA/UTS-46 mapping, which turns every one of
them into the IP literal `127.0.0.1`, and the connector does not resolve an IP literal, so the
resolver that drops non-public answers never saw it. Likewise an IPv6 address that embeds an IPv4 one (mapped,
compatible, SIIT, 6to4, NAT64, Teredo) reaches that IPv4 address, so it is judged as it.

Here the host is normalised twice, by yarl itself and independently (NFKC, the ideographic and
full-width dots, UTS-46), and a URL on which the two disagree is undeliverable. The URL handed
back has IP literals in their canonical form, so what the client parses is exactly what was
judged. Names pass; they are judged at connect time, where `public_answers` filters what the
resolver returns by the same rule as `is_public`. Everything here is pure: no DNS, no sockets.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TypeVar
from urllib.parse import urlsplit

import idna
import yarl

__all__ = [
    "UndeliverableUrlError",
    "check_callback_url",
    "embedded_ipv4",
    "is_public",
    "normalise_host",
    "parse_address",
    "public_answers",
]

Address = IPv4Address | IPv6Address
Answer = TypeVar("Answer", bound=Mapping[str, object])

SCHEMES = frozenset({"http", "https"})
LOCALHOST_NAMES = frozenset({
    "localhost", "localhost.localdomain", "localhost6", "localhost6.localdomain6", "ip6-localhost", "ip6-loopback",
})

# Dots UTS-46 treats as label separators; NFKC folds U+FF0E and U+FF61 but leaves U+3002 as it is.
DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
ASCII_NAME = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*\.?", re.ASCII)
IPV4_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*", re.ASCII)
NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*", re.ASCII)
MAX_NAME_LENGTH = 253
IPV4_BYTES = 4
BYTE_MAX = 0xFF

# Special-purpose IPv4 blocks (RFC 6890 and the IANA registry) no callback may go to. Written out
# rather than taken from `ipaddress.is_global`, whose table differs between Python releases and
# counts multicast as global.
IPV4_NON_PUBLIC = tuple(IPv4Network(net) for net in (
    "0.0.0.0/8",        # "this network", 0.0.0.0 included
    "10.0.0.0/8",       # private
    "100.64.0.0/10",    # shared address space (carrier-grade NAT)
    "127.0.0.0/8",      # loopback
    "169.254.0.0/16",   # link-local, the cloud metadata service 169.254.169.254 included
    "172.16.0.0/12",    # private
    "192.0.0.0/24",     # IETF protocol assignments
    "192.0.2.0/24",     # documentation (TEST-NET-1)
    "192.88.99.0/24",   # the deprecated 6to4 relay anycast
    "192.168.0.0/16",   # private
    "198.18.0.0/15",    # benchmarking
    "198.51.100.0/24",  # documentation (TEST-NET-2)
    "203.0.113.0/24",   # documentation (TEST-NET-3)
    "224.0.0.0/4",      # multicast
    "240.0.0.0/4",      # reserved, the limited broadcast 255.255.255.255 included
))

# Only global unicast can be public; ::/8 (loopback, unspecified, the IPv4 embeddings), fc00::/7
# (unique local), fe80::/10 (link-local), fec0::/10 (site-local) and ff00::/8 (multicast) are all
# outside it. The embeddings are judged by their IPv4 address before this is consulted.
IPV6_GLOBAL_UNICAST = IPv6Network("2000::/3")
IPV6_NON_PUBLIC = tuple(IPv6Network(net) for net in (
    "2001::/23",        # IETF protocol assignments (benchmarking, ORCHID, anycast services)
    "2001:db8::/32",    # documentation
    "3fff::/20",        # documentation (RFC 9637)
))
IPV4_MAPPED = IPv6Network("::ffff:0:0/96")
IPV4_TRANSLATED = IPv6Network("::ffff:0:0:0/96")    # SIIT (RFC 2765)
IPV4_COMPATIBLE = IPv6Network("::/96")               # deprecated (RFC 4291)
NAT64_WELL_KNOWN = IPv6Network("64:ff9b::/96")      # RFC 6052
NAT64_LOCAL_USE = IPv6Network("64:ff9b:1::/48")     # RFC 8215
SIX_TO_FOUR = IPv6Network("2002::/16")              # RFC 3056
TEREDO = IPv6Network("2001::/32")                   # RFC 4380
UNSPECIFIED = IPv6Address("::")
LOOPBACK = IPv6Address("::1")

# Where RFC 6052 puts the IPv4 octets for each prefix length an operator may carve out of the
# local-use /48 (byte 8, bits 64-71, is always skipped).
NAT64_LOCAL_OCTETS = {48: (6, 7, 9, 10), 56: (7, 9, 10, 11), 64: (9, 10, 11, 12), 96: (12, 13, 14, 15)}


class UndeliverableUrlError(ValueError):
    """A callback URL that must not, or cannot, be called; the message is the short reason."""


def _fold(host: str) -> str:
    """Full-width and other compatibility forms to their plain ones, every dot to '.'."""
    return unicodedata.normalize("NFKC", host).translate(DOTS)


def _our_host(url: str) -> str:
    """The URL's host normalised without yarl: bracketed IPv6 compressed, names NFKC, UTS-46."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port the client cannot read is as bad as a host it cannot
    except ValueError as exc:
        raise UndeliverableUrlError(f"unparsable URL: {exc}") from None
    host_port = parts.netloc.rpartition("@")[2]
    host = parts.hostname or ""
    if host_port.startswith("["):
        address = parse_address(f"[{host}]")
        if not isinstance(address, IPv6Address):
            raise UndeliverableUrlError("brackets hold no IPv6 address")
        return address.compressed
    host = _fold(host)
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            raise UndeliverableUrlError("host is not a valid internationalised name") from None
    host = host.lower()
    if len(host.rstrip(".")) > MAX_NAME_LENGTH or not ASCII_NAME.fullmatch(host):
        raise UndeliverableUrlError("host is not a valid name or address")
    return host


def _same_host(theirs: str, ours: str) -> bool:
    """IPv6 hosts compare as addresses (each side may print one differently), the rest as text."""
    if ":" in ours:
        return ":" in theirs and parse_address(theirs) == parse_address(ours)
    return theirs == ours


def normalise_host(url: str) -> str:
    """The host exactly as aiohttp will connect to it (yarl's `raw_host`, which the connector
    reads): ASCII, lower case, IDNA-encoded, IPv6 without brackets.

    Raises `UndeliverableUrlError` if yarl cannot parse the URL, it has no host, or yarl's host
    and the independent normalisation differ (then what is judged might not be what is called)."""
    try:
        theirs = yarl.URL(url).raw_host
    except (ValueError, TypeError) as exc:
        raise UndeliverableUrlError(f"unparsable URL: {exc}") from None
    if not theirs:
        raise UndeliverableUrlError("URL has no host")
    ours = _our_host(url)
    if not _same_host(theirs, ours):
        raise UndeliverableUrlError(f"host is ambiguous: {theirs!r} to the HTTP client, {ours!r} here")
    return theirs


def _legacy_ipv4(name: str) -> IPv4Address | None:
    """The address inet_aton reads from `name`: one to four parts, each decimal, octal (leading
    0) or hex (0x); the last fills the remaining bytes, so 127.1 is 127.0.0.1."""
    parts = name.split(".")
    if len(parts) > IPV4_BYTES or not all(IPV4_PART.fullmatch(part) for part in parts):
        return None
    values = [int(part, 16) if part[:2] in {"0x", "0X"} else int(part, 8 if part.startswith("0") else 10)
              for part in parts]
    *leading, last = values
    if any(value > BYTE_MAX for value in leading) or last >= 1 << (8 * (IPV4_BYTES + 1 - len(values))):
        return None
    number = last
    for index, value in enumerate(leading):
        number |= value << (8 * (IPV4_BYTES - 1 - index))
    return IPv4Address(number)


def parse_address(host: str) -> Address | None:
    """The IP address `host` names, or None if it is a name.

    IPv4 in every notation inet_aton accepts (127.1, 2130706433, 0x7f000001, 0177.0.0.1 and mixes;
    one trailing dot allowed), IPv6 with or without brackets. A host that can only be meant as an
    address but is none (an IPv6 zone id, a colon, brackets around something else, a last label
    that is a number) raises `UndeliverableUrlError`, so it can never pass as a name."""
    name = _fold(host).strip().lower()
    bracketed = name.startswith("[") and name.endswith("]")
    if bracketed or ":" in name:
        inner = name[1:-1] if bracketed else name
        if "%" in inner:
            raise UndeliverableUrlError("IPv6 zone ids are refused")
        try:
            return IPv6Address(inner)
        except ValueError:
            raise UndeliverableUrlError(f"{host!r} is not an IPv6 address") from None
    name = name.removesuffix(".")
    if not NUMERIC_LABEL.fullmatch(name.rpartition(".")[2]):
        return None
    address = _legacy_ipv4(name)
    if address is None:
        raise UndeliverableUrlError(f"{host!r} ends in a number but is not an IPv4 address")
    return address


def _ipv4_at(addr: IPv6Address, octets: tuple[int, ...]) -> IPv4Address:
    packed = addr.packed
    return IPv4Address(bytes(packed[index] for index in octets))


def embedded_ipv4(addr: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one reaches, if it embeds one: IPv4-mapped ::ffff:a.b.c.d,
    IPv4-compatible ::a.b.c.d, SIIT ::ffff:0:a.b.c.d, 6to4 2002:AABB:CCDD::/48, NAT64 64:ff9b::/96
    and the local-use 64:ff9b:1::/48 (RFC 6052 layout for a /48), Teredo 2001::/32 (the client,
    the complement of the last 32 bits)."""
    if any(addr in net for net in (IPV4_MAPPED, IPV4_TRANSLATED, NAT64_WELL_KNOWN)) or (
        addr in IPV4_COMPATIBLE and addr not in {UNSPECIFIED, LOOPBACK}
    ):
        return IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr in NAT64_LOCAL_USE:
        return _ipv4_at(addr, NAT64_LOCAL_OCTETS[48])
    if addr in SIX_TO_FOUR:
        return IPv4Address((int(addr) >> 80) & 0xFFFFFFFF)
    if addr in TEREDO:
        return IPv4Address(~int(addr) & 0xFFFFFFFF)
    return None


def is_public(addr: Address) -> bool:
    """Whether `addr` is globally routable and no special-purpose block: an IPv6 address that
    embeds an IPv4 one is judged as that IPv4 address (a Teredo one as both its server and its
    client; a local-use NAT64 one as the IPv4 address under every prefix length the operator may
    have chosen)."""
    if isinstance(addr, IPv4Address):
        return not any(addr in net for net in IPV4_NON_PUBLIC)
    if addr.scope_id is not None or addr in {UNSPECIFIED, LOOPBACK}:
        return False
    if addr in NAT64_LOCAL_USE:
        return all(is_public(_ipv4_at(addr, octets)) for octets in NAT64_LOCAL_OCTETS.values())
    if addr in TEREDO:
        server = IPv4Address((int(addr) >> 64) & 0xFFFFFFFF)
        client = embedded_ipv4(addr)
        return client is not None and is_public(server) and is_public(client)
    embedded = embedded_ipv4(addr)
    if embedded is not None:
        return is_public(embedded)
    return addr in IPV6_GLOBAL_UNICAST and not any(addr in net for net in IPV6_NON_PUBLIC)


def _is_localhost_name(host: str) -> bool:
    name = host.rstrip(".")
    return name in LOCALHOST_NAMES or name.endswith(".localhost")


def check_callback_url(url: str, *, allow_private: bool) -> str:
    """The URL to call back, normalised as the HTTP client parses it (IP literals canonical), or
    `UndeliverableUrlError`: not http(s), userinfo, unparsable for the client, no host, or (unless
    `allow_private`) a non-public address literal or a localhost name. Other names pass: they
    are judged on connection, answer by answer."""
    try:
        parsed = yarl.URL(url)
    except (ValueError, TypeError) as exc:
        raise UndeliverableUrlError(f"unparsable URL: {exc}") from None
    if parsed.scheme not in SCHEMES:
        raise UndeliverableUrlError("only http and https URLs are called back")
    if not parsed.raw_host:
        raise UndeliverableUrlError("URL has no host")
    try:
        authority = urlsplit(url).netloc
    except ValueError as exc:
        raise UndeliverableUrlError(f"unparsable URL: {exc}") from None
    if "@" in authority or parsed.raw_user is not None or parsed.raw_password is not None:
        raise UndeliverableUrlError("URL carries userinfo")
    host = normalise_host(url)
    address = parse_address(host)
    if address is None:
        if not allow_private and _is_localhost_name(host):
            raise UndeliverableUrlError("host is a localhost name")
        return str(parsed)
    if not allow_private and not is_public(address):
        raise UndeliverableUrlError(f"host is a non-public address ({address})")
    return str(parsed.with_host(str(address)))


def public_answers(answers: Iterable[Answer]) -> list[Answer]:
    """The resolver answers whose "host" is a public address by `is_public`; anything else,
    unparsable or carrying a zone id included, is dropped."""
    kept: list[Answer] = []
    for answer in answers:
        host = answer.get("host")
        if not isinstance(host, str):
            continue
        try:
            address = parse_address(host)
        except UndeliverableUrlError:
            continue
        if address is not None and is_public(address):
            kept.append(answer)
    return kept
