"""The second error dialect (config/error_dialects.yaml) names real codes of its source list.

tests/data/source_xsolla_codes.md keeps the Xsolla Login API error table verbatim: one line per
code (`003-049Too many attempts to use confirmation code. Try again later.` followed directly by
the Korean advice; one line may name several codes, `040-006, 040-007, 040-008...`). Each mapping
line of the dialect file quotes, as its comment, the English description it matched. Nothing here
reads anything outside the repository.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

TESTS_DIR = Path(__file__).resolve().parent
CONFIG_DIR = TESTS_DIR.parent / "config"
DIALECTS_PATH = CONFIG_DIR / "error_dialects.yaml"
CATALOG_PATH = CONFIG_DIR / "catalog.yaml"
SOURCE_XSOLLA = TESTS_DIR / "data" / "source_xsolla_codes.md"

XSOLLA_CODE = re.compile(r"^\d{3}-\d{3}$")
SOURCE_LINE = re.compile(r"^\s*(\d{3,4}-\d{3,4}(?:,\s*\d{3,4}-\d{3,4})*)(\S.*)$")
KEY = re.compile(r"^(?P<code>\d{4}|AP\d{3})(?:/(?P<variant>[a-z_]+))?$")
MAPPING_LINE = re.compile(r'^\s+"(?P<key>[^"]+)":\s*"(?P<value>[^"]+)"\s*#\s*(?P<quote>.+?)\s*$')
# Outcomes the seed's own summary names as having an equivalent: each must stay mapped.
EXPECTED = {
    "4013": "300-006",  # invalid confirmation code
    "4301": "003-049",  # too many attempts
    "3006": "300-003",  # rate limited
    "4302": "300-005",  # resend failure
    "4610": "002-056",  # invalid phone
    "6756": "002-043",  # phone cannot receive the message
    "3001": "002-027",  # invalid parameter
    "AP902": "002-058",  # locked after too many attempts
}


@cache
def xsolla_source() -> dict[str, str]:
    """Xsolla code -> the rest of its source line (the English description, then the advice)."""
    table: dict[str, str] = {}
    for line in SOURCE_XSOLLA.read_text(encoding="utf-8").splitlines():
        match = SOURCE_LINE.match(line)
        if match:
            for code in match[1].split(","):
                table.setdefault(code.strip(), match[2])
    return table


@cache
def xsolla_mapping() -> dict[str, str]:
    data = yaml.safe_load(DIALECTS_PATH.read_text(encoding="utf-8"))
    mapping = data["xsolla"]
    assert isinstance(mapping, dict)
    return mapping


@cache
def catalog() -> tuple[dict[str, Any], ...]:
    return tuple(yaml.safe_load(CATALOG_PATH.read_text(encoding="utf-8"))["codes"])


def catalog_addresses() -> set[tuple[str, str | None]]:
    """(code, variant) of every catalog row; variant None where a code has one row."""
    return {(entry["code"], entry.get("variant")) for entry in catalog()}


class TestXsollaDialect:
    def test_the_source_copy_parses(self) -> None:
        """The copy of the Xsolla list holds its codes, with their English descriptions."""
        table = xsolla_source()
        assert len(table) == 83  # 82 lines, one naming three codes, 003-007 listed twice
        assert table["010-010"].startswith("Invalid confirmation code.")
        assert {"040-006", "040-007", "040-008"} <= set(table)

    def test_mapped_values_are_nnn_nnn_codes_of_the_list(self) -> None:
        """Every mapped Xsolla code has the NNN-NNN format and appears in the source list."""
        assert xsolla_mapping()
        for key, value in xsolla_mapping().items():
            assert isinstance(value, str), key
            assert XSOLLA_CODE.match(value), (key, value)
            assert value in xsolla_source(), (key, value)

    def test_mapped_keys_are_catalog_rows(self) -> None:
        """Every key names a catalog row: a code, with its variant exactly when it has several rows."""
        addresses = catalog_addresses()
        multi_row = {code for code, variant in addresses if variant is not None}
        for key in xsolla_mapping():
            match = KEY.match(key)
            assert match, key
            code, variant = match["code"], match["variant"]
            assert (code, variant) in addresses, key
            assert (variant is not None) == (code in multi_row), key

    def test_every_line_quotes_the_description_it_matched(self) -> None:
        """Each mapping line's comment is the English description that opens the Xsolla code's line."""
        quoted = {}
        for line in DIALECTS_PATH.read_text(encoding="utf-8").splitlines():
            match = MAPPING_LINE.match(line)
            if match:
                quoted[match["key"]] = (match["value"], match["quote"])
        assert set(quoted) == set(xsolla_mapping())
        for key, (value, quote) in quoted.items():
            assert xsolla_mapping()[key] == value, key
            description = xsolla_source()[value]
            assert description.startswith(quote), (key, value, quote)
            # The whole description: it ends a sentence, and no further English sentence follows.
            assert quote.endswith("."), (key, value, quote)
            assert not description[len(quote):][:1].isspace(), (key, value, "quote stops mid-description")

    def test_the_named_outcomes_are_mapped(self) -> None:
        """The outcomes with a clear equivalent in the Xsolla list keep their mapping."""
        for key, value in EXPECTED.items():
            assert xsolla_mapping().get(key) == value, key

    def test_only_code_mismatches_map_to_confirmation_code_errors(self) -> None:
        """The 'incorrect/invalid confirmation code' codes are answered only for a code the user can
        type again: the catalog marks those rows retryable."""
        retryable = {(e["code"], e.get("variant")): e["retryable"] for e in catalog()}
        for key, value in xsolla_mapping().items():
            if value in {"300-006", "010-010"}:
                match = KEY.match(key)
                assert match
                assert retryable[match["code"], match["variant"]] is True, key
