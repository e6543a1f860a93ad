"""Magic numbers (contract section 5): the last digits of a phone pick the upstream's outcome.

Three forms, read on the last 8 digits of the number:

- a code followed by one of its detail codes (`01067016030` -> 6701/6030);
- `0001` followed by a code (`01000012910`): the code where it happens later than the start,
  for the two codes the simulator can answer at two points: 2910 from the carrier's own check of
  the typed code at confirm (the catalog's `code_mismatch` row) rather than from its subscriber
  check at start, and 6752 reported by the PASS app after the push rather than refused at start;
- otherwise the last 4 digits are a code (`01000004611` -> 4611).

`POINTS` names where the simulator's upstreams answer and which codes a number may ask of each;
`magic_number` writes the number that asks for an outcome, and `magic_rows` lists them all (the
README's table is generated from it: `python scripts/magic_table.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from machines.ars import CALL_OUTCOMES
from service.catalog import Catalog

LATER = "0001"  # the 4 digits before a code that ask for its later point
PLAIN = "0000"  # the 4 digits before a code in the numbers the table shows


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an upstream answers: a catalog code, its detail code, the row of a repeated code."""

    code: str
    detail_code: str | None = None
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class Point:
    """Where one of the simulator's upstreams answers, and what a magic number may ask of it."""

    name: str
    where: str  # what a person reads in the table
    channels: tuple[str, ...]
    codes: frozenset[str]  # asked by the plain forms (code, or code + detail code)
    later: Mapping[str, str | None] = field(default_factory=dict)  # asked by 0001 + code: code -> variant


ARS_AT_KEYPAD = frozenset({"4698"})  # the carrier's check after the user keyed the digits in
ARS_AT_CALL = CALL_OUTCOMES - ARS_AT_KEYPAD

SUBSCRIBER_CHECK = Point(
    "subscriber", "start: the carrier's subscriber check", ("sms", "ars"), frozenset({"2910", "4016", "9998"}))
PASS_CHECK = Point(
    "pass_subscriber", "start: the PASS gateway", ("pass",),
    frozenset({"6701", "6704", "6707", "6751", "6752", "6753", "6754", "6755", "6756", "6757", "9998"}))
ADDON_CHECK = Point(
    "addons", "confirm of the right code: the carrier's checks", ("sms",), frozenset({"4022", "4023"}),
    {"2910": "code_mismatch"})
CALL = Point("call", "the call centre, once the call is placed; then confirm", ("ars",), ARS_AT_CALL)
KEYPAD = Point("keypad", "the call centre, once the right digits are keyed in; then confirm", ("ars",),
               ARS_AT_KEYPAD)
PUSH = Point("push", "the PASS app, once the push arrives; then confirm", ("pass",),
             frozenset({"6702", "6703", "6705", "6706"}), {"6752": None})
POINTS = (SUBSCRIBER_CHECK, PASS_CHECK, ADDON_CHECK, CALL, KEYPAD, PUSH)
SUBSCRIBER_POINTS = {"sms": SUBSCRIBER_CHECK, "ars": SUBSCRIBER_CHECK, "pass": PASS_CHECK}


def digits(phone: str) -> str:
    """The ASCII digits of a phone number, hyphens and anything else dropped."""
    return "".join(ch for ch in phone if "0" <= ch <= "9")


def magic_outcome(phone: str, allowed: set[str] | frozenset[str], catalog: Catalog,
                  later: Mapping[str, str | None] | None = None) -> tuple[str, str | None] | None:
    """The (code, detail code) a magic number asks for, among the codes `allowed` at this point
    (and `later`, asked by the `0001` form)."""
    found = outcome(phone, allowed, catalog, later)
    return None if found is None else (found.code, found.detail_code)


def outcome(phone: str, allowed: set[str] | frozenset[str], catalog: Catalog,
            later: Mapping[str, str | None] | None = None) -> Outcome | None:
    number = digits(phone)
    code, detail = number[-8:-4], number[-4:]
    if code in allowed and code in catalog and detail in catalog.get(code).detail_codes:
        return Outcome(code, detail)
    if code == LATER and detail in catalog:
        # A later-point number asks nothing of the earlier point.
        return Outcome(detail, None, (later or {})[detail]) if detail in (later or {}) else None
    if detail in allowed:
        return Outcome(detail)
    return None


def at(point: Point, phone: str, catalog: Catalog) -> Outcome | None:
    """The outcome `phone` asks of `point`."""
    return outcome(phone, point.codes, catalog, point.later)


def magic_number(code: str, detail_code: str | None = None, *, later: bool = False) -> str:
    """The phone number (010 + 8 digits) that asks for `code` (with `detail_code`, or later)."""
    if detail_code is not None:
        return f"010{code}{detail_code}"
    return f"010{LATER if later else PLAIN}{code}"


@dataclass(frozen=True, slots=True)
class MagicRow:
    code: str
    variant: str | None
    detail_code: str | None
    phone: str
    point: Point


def magic_rows(catalog: Catalog) -> list[MagicRow]:
    """Every outcome a magic number asks for, in catalog order (a code's plain number, then one
    per detail code, then its later number)."""
    rows: list[MagicRow] = []
    for entry in catalog.entries:
        for point in POINTS:
            if entry.code in point.codes and entry.variant in {None, catalog.get(entry.code).variant}:
                rows.append(MagicRow(entry.code, entry.variant, None, magic_number(entry.code), point))
                rows += [MagicRow(entry.code, entry.variant, detail, magic_number(entry.code, detail), point)
                         for detail in entry.detail_codes]
            if entry.code in point.later and point.later[entry.code] == entry.variant:
                rows.append(MagicRow(entry.code, entry.variant, None, magic_number(entry.code, later=True),
                                     point))
    return rows
