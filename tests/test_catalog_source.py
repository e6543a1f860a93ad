"""The code catalog (config/catalog.yaml) is complete and faithful to its source documents.

The sources are kept verbatim under tests/data/: the error-code table of the identity
verification service (source_catalog.md) and the mOTP FAQ lines that name its codes
(source_motp_codes.md). Nothing here reads anything outside the repository.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

TESTS_DIR = Path(__file__).resolve().parent
CATALOG_PATH = TESTS_DIR.parent / "config" / "catalog.yaml"
SOURCE_CATALOG = TESTS_DIR / "data" / "source_catalog.md"
SOURCE_MOTP = TESTS_DIR / "data" / "source_motp_codes.md"

SOURCE_ROWS = 48
SOURCE_DISTINCT_CODES = 47
CHANNELS = frozenset({"sms", "ars", "pass", "motp"})
ENTRY_KEYS = frozenset({
    "code", "http_status", "retryable", "channels", "messages",
    "description", "description_ko", "detail_codes", "detail_codes_ko", "service_defined",
})
OPTIONAL_KEYS = frozenset({"variant"})  # only on a code listed more than once (2910)

ROW = re.compile(r"^\|\s*(\d{4})\s*\|([^|]*)\|([^|]*)\|([^|]*)\|\s*$")
BREAK = re.compile(r"\s*<br>\s*")
DETAIL_LINE = re.compile(r"^-\s*(\d{4}(?:\s*,\s*\d{4})*)\s*:\s*(.+)$", re.MULTILINE)
MOTP_CODE = re.compile(r"\bAP\d{3}\b")


def normalise(cell: str) -> str:
    """Turn a source cell into catalog text: <br> (and the spaces around it) as a line break."""
    text = BREAK.sub("\n", cell.strip())
    return re.sub(r" {2,}", " ", text).strip()


@cache
def source_rows() -> tuple[tuple[str, str, str], ...]:
    """Return (code, description, customer message) of every table row, in source order."""
    rows = []
    for line in SOURCE_CATALOG.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            rows.append((match[1], normalise(match[2]), normalise(match[3])))
    return tuple(rows)


@cache
def motp_source_codes() -> frozenset[str]:
    """Return the mOTP codes the FAQ excerpt names."""
    return frozenset(MOTP_CODE.findall(SOURCE_MOTP.read_text(encoding="utf-8")))


@cache
def catalog() -> tuple[dict[str, Any], ...]:
    """Return the catalog entries, in file order."""
    data = yaml.safe_load(CATALOG_PATH.read_text(encoding="utf-8"))
    return tuple(data["codes"])


def entries_for_rows(rows: Iterable[tuple[str, str, str]] | None = None) -> list[tuple[tuple[str, str, str], dict[str, Any]]]:
    """Pair each source row (by default the normalised ones) with its entry: the n-th row of a code
    with the n-th entry of that code."""
    by_code: dict[str, list[dict[str, Any]]] = {}
    for entry in catalog():
        by_code.setdefault(entry["code"], []).append(entry)
    seen: Counter[str] = Counter()
    pairs = []
    for row in source_rows() if rows is None else rows:
        code = row[0]
        found = by_code.get(code, [])
        assert seen[code] < len(found), f"no catalog entry for source row #{seen[code] + 1} of {code}"
        pairs.append((row, found[seen[code]]))
        seen[code] += 1
    return pairs


def listed_details(description: str) -> dict[str, str]:
    """Return the detail codes a source description lists (`- 6030: ...`, `- 4002, 4003 : ...`)."""
    details = {}
    for codes, meaning in DETAIL_LINE.findall(description):
        for code in codes.split(","):
            details[code.strip()] = meaning.strip()
    return details


def description_without_details(description: str) -> str:
    """Return a source description without its detail-code list (and a bare `상세코드` heading)."""
    kept = [
        line for line in description.split("\n")
        if not DETAIL_LINE.match(line) and line.strip() != "상세코드"
    ]
    return "\n".join(kept)


class TestCatalogAgainstSource:
    """The catalog holds every source code with the source's own texts."""

    def test_source_parse_counts(self) -> None:
        """The source table parses to 48 rows and 47 distinct codes."""
        codes = [code for code, _, _ in source_rows()]
        assert len(codes) == SOURCE_ROWS
        assert len(set(codes)) == SOURCE_DISTINCT_CODES
        assert Counter(codes)["2910"] == 2

    def test_every_source_row_has_its_message(self) -> None:
        """Each source row has an entry whose Korean message is the row's message."""
        for (code, _, message), entry in entries_for_rows():
            assert entry["messages"]["ko"] == message, code

    def test_one_entry_per_source_row_in_order(self) -> None:
        """Source codes appear in the catalog once per row, in the source's order."""
        source_codes = [code for code, _, _ in source_rows()]
        listed = [e["code"] for e in catalog() if e["code"] in set(source_codes)]
        assert listed == source_codes

    def test_2910_rows_are_distinct_entries(self) -> None:
        """Both 2910 rows are present as two different entries, in source order."""
        rows = [row for row in source_rows() if row[0] == "2910"]
        entries = [e for e in catalog() if e["code"] == "2910"]
        assert len(rows) == len(entries) == 2
        assert rows[0][2] != rows[1][2]
        assert [e["messages"]["ko"] for e in entries] == [row[2] for row in rows]
        assert entries[0]["description_ko"] == rows[0][1]
        assert entries[1]["description_ko"] == rows[1][1]

    def test_korean_description_matches_source(self) -> None:
        """description_ko is the source description without its detail-code list."""
        for (code, description, _), entry in entries_for_rows():
            assert entry["description_ko"] == description_without_details(description), code

    def test_detail_codes_match_source_lists(self) -> None:
        """detail_codes holds exactly the detail codes the source lists for each row."""
        parsed = {}
        for (code, description, _), entry in entries_for_rows():
            listed = listed_details(description)
            parsed[code] = set(listed)
            assert set(entry["detail_codes"]) == set(listed), code
        assert {"4002", "4003", "4004"} <= parsed["4003"]
        assert {"6030", "6210", "6116"} <= parsed["6701"]
        assert {"6205", "6110", "6035", "6112", "6033"} <= parsed["6705"]
        assert all(parsed[code] for code in ("6701", "6702", "6703", "6704", "6705", "6706", "6707"))

    def test_motp_codes_named_by_faq(self) -> None:
        """AP005 and AP011 are named in the FAQ excerpt and present in the catalog."""
        faq = SOURCE_MOTP.read_text(encoding="utf-8")
        codes = {e["code"] for e in catalog()}
        for code in ("AP005", "AP011"):
            assert code in motp_source_codes()
            assert code in codes
        messages = {e["code"]: e["messages"]["ko"] for e in catalog()}
        assert messages["AP005"] in faq
        assert messages["AP011"] in faq


class TestCatalogShape:
    """Every entry is well formed and marked service-defined exactly when no source has it."""

    def test_entries_have_every_key(self) -> None:
        """Every entry has exactly the catalog keys (and `variant` where its code repeats)."""
        for entry in catalog():
            assert ENTRY_KEYS <= set(entry) <= ENTRY_KEYS | OPTIONAL_KEYS, entry.get("code")

    def test_entry_values_are_well_typed(self) -> None:
        """Statuses, flags, channels, texts and detail codes have the right types and ranges."""
        for entry in catalog():
            code = entry["code"]
            assert isinstance(code, str), code
            assert code, code
            status = entry["http_status"]
            assert isinstance(status, int), code
            assert not isinstance(status, bool), code
            assert 200 <= status <= 599, code
            assert isinstance(entry["retryable"], bool), code
            assert isinstance(entry["service_defined"], bool), code
            channels = entry["channels"]
            assert isinstance(channels, list), code
            assert channels, code
            assert set(channels) <= CHANNELS, code
            assert len(set(channels)) == len(channels), code
            for locale in ("ko", "en"):
                text = entry["messages"][locale]
                assert isinstance(text, str), code
                assert text.strip(), code
            for key in ("description", "description_ko"):
                assert isinstance(entry[key], str), code
                assert entry[key].strip(), code
            details = entry["detail_codes"]
            assert isinstance(details, dict), code
            assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in details.items()), code

    def test_english_messages_keep_line_breaks(self) -> None:
        """The English message has as many lines as the Korean one."""
        for entry in catalog():
            messages = entry["messages"]
            assert messages["en"].count("\n") == messages["ko"].count("\n"), entry["code"]

    def test_service_defined_exactly_when_not_in_sources(self) -> None:
        """service_defined is true for exactly the codes that neither source names."""
        known = {code for code, _, _ in source_rows()} | motp_source_codes()
        for entry in catalog():
            assert entry["service_defined"] is (entry["code"] not in known), entry["code"]
        own = {e["code"] for e in catalog() if e["service_defined"]}
        assert {"AP901", "AP902"} <= own, "the contract asks for mOTP mismatch and lockout codes"

    def test_codes_other_than_2910_are_unique(self) -> None:
        """Only 2910, listed twice in the source, has more than one entry."""
        counts = Counter(e["code"] for e in catalog())
        assert {code for code, n in counts.items() if n > 1} == {"2910"}
        assert counts["2910"] == 2
