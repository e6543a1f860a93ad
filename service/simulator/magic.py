"""Magic numbers (contract section 5): the last digits of a phone pick the upstream's outcome."""

from __future__ import annotations

from service.catalog import Catalog


def digits(phone: str) -> str:
    """The ASCII digits of a phone number, hyphens and anything else dropped."""
    return "".join(ch for ch in phone if "0" <= ch <= "9")


def magic_outcome(phone: str, allowed: set[str] | frozenset[str], catalog: Catalog) -> tuple[str, str | None] | None:
    """The outcome a magic number asks for, among the codes `allowed` at this point.

    The last 8 digits may be a code followed by one of its detail codes (01067016030 ->
    6701/6030); otherwise the last 4 digits may be a code (01000004611 -> 4611).
    """
    number = digits(phone)
    code, detail = number[-8:-4], number[-4:]
    if code in allowed and code in catalog and detail in catalog.get(code).detail_codes:
        return code, detail
    if number[-4:] in allowed:
        return number[-4:], None
    return None
