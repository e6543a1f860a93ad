"""Detail codes, variants and the detail-code placeholder of the code catalog (config/catalog.yaml).

The source table is kept verbatim in tests/data/source_catalog.md. Its description cells list
detail codes as `- 6030: T 인증 미가입` (several codes may share one line: `- 4002, 4003 : ...`),
separated by `<br>`. `detail_codes_ko` must hold each code's text exactly as the source writes
it (only the spaces around it trimmed); `detail_codes` keeps the English reading, same keys.
Nothing here reads anything outside the repository.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

from tests.test_catalog_source import catalog, entries_for_rows

TESTS_DIR = Path(__file__).resolve().parent
SOURCE_CATALOG = TESTS_DIR / "data" / "source_catalog.md"

SOURCE_DETAIL_CODES = 28
ROW = re.compile(r"^\|\s*(\d{4})\s*\|([^|]*)\|([^|]*)\|([^|]*)\|\s*$")
DETAIL_ITEM = re.compile(r"^-\s*(\d{4}(?:\s*,\s*\d{4})*)\s*:\s*(.*)$")
PLACEHOLDER = {"ko": "(상세코드)", "en": "(detail code)"}
# The rows whose customer message ends with the placeholder (source: 4003 and 6701-6707).
PLACEHOLDER_CODES = {"4003", "6701", "6702", "6703", "6704", "6705", "6706", "6707"}
VARIANTS_2910 = ["subscriber", "code_mismatch"]  # in source order
VARIANT_NAME = re.compile(r"^[a-z][a-z_]*[a-z]$")


@cache
def source_rows() -> tuple[tuple[str, str, str], ...]:
    """(code, raw description cell, raw customer-message cell) of every table row, in order."""
    rows = []
    for line in SOURCE_CATALOG.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            rows.append((match[1], match[2], match[3]))
    return tuple(rows)


def source_details(description: str) -> dict[str, str]:
    """The detail codes a raw description cell lists, each with its text exactly as written."""
    details: dict[str, str] = {}
    for piece in description.split("<br>"):
        match = DETAIL_ITEM.match(piece.strip())
        if match:
            for code in match[1].split(","):
                assert code.strip() not in details, f"detail code {code.strip()} listed twice in one row"
                details[code.strip()] = match[2].strip()
    return details


def source_entries() -> list[tuple[tuple[str, str, str], dict[str, Any]]]:
    """Each raw source row with its entry (the pairing of test_catalog_source)."""
    return entries_for_rows(source_rows())


class TestKoreanDetailTexts:
    def test_the_source_lists_28_detail_codes(self) -> None:
        """The source's detail-code lists parse to 28 codes, on 4003 and 6701-6707."""
        listed = {code: source_details(description) for code, description, _ in source_rows()}
        assert sum(len(details) for details in listed.values()) == SOURCE_DETAIL_CODES
        assert {code for code, details in listed.items() if details} == PLACEHOLDER_CODES
        assert listed["4003"] == {
            "4002": "요청 시 저장한 제한횟수등 진행사항이 없음",
            "4003": "요청 시 저장한 제한횟수등 진행사항이 없음",
            "4004": "ARS 및 SMS OTP 요청을 찾을 수 없는 경우",
        }
        assert listed["6705"]["6033"] == "T 인증 PIN 입력"

    def test_every_korean_detail_text_is_the_source_text(self) -> None:
        """detail_codes_ko holds, per row, exactly the source's detail codes and their texts."""
        checked = 0
        for (code, description, _), entry in source_entries():
            expected = source_details(description)
            assert entry["detail_codes_ko"] == expected, code
            checked += len(expected)
        assert checked == SOURCE_DETAIL_CODES

    def test_korean_and_english_detail_codes_name_the_same_codes(self) -> None:
        """Every entry lists the same detail codes, in the same order, in both languages."""
        for entry in catalog():
            assert list(entry["detail_codes_ko"]) == list(entry["detail_codes"]), entry["code"]
            assert all(isinstance(text, str) and text.strip() for text in entry["detail_codes_ko"].values())

    def test_entries_without_a_source_row_have_no_detail_codes(self) -> None:
        """The mOTP and service-defined codes have no detail codes in either language."""
        source_codes = {code for code, _, _ in source_rows()}
        for entry in catalog():
            if entry["code"] not in source_codes:
                assert entry["detail_codes"] == entry["detail_codes_ko"] == {}, entry["code"]


class TestVariants:
    def test_repeated_codes_have_distinct_variants(self) -> None:
        """A code with more than one row names each row by a variant; (code, variant) is unique."""
        counts = Counter(entry["code"] for entry in catalog())
        addresses = set()
        for entry in catalog():
            if counts[entry["code"]] > 1:
                assert VARIANT_NAME.match(entry.get("variant", "")), entry["code"]
            else:
                assert "variant" not in entry, entry["code"]
            address = (entry["code"], entry.get("variant"))
            assert address not in addresses, address
            addresses.add(address)

    def test_2910_variants_follow_the_source_rows(self) -> None:
        """2910/subscriber is the subscriber check (terminal); 2910/code_mismatch the carrier's
        verification-code check, which the user can retry by typing the code again."""
        rows = [row for row in source_rows() if row[0] == "2910"]
        entries = [entry for entry in catalog() if entry["code"] == "2910"]
        assert [entry["variant"] for entry in entries] == VARIANTS_2910
        subscriber, mismatch = entries
        assert "가입자 명의인증" in rows[0][1]
        assert "인증번호를 확인해주세요" in rows[1][2]
        assert "인증번호 검증 실패" in rows[1][1]
        assert subscriber["retryable"] is False
        assert mismatch["retryable"] is True
        assert "sms" in mismatch["channels"]


class TestPlaceholder:
    def test_placeholder_rows(self) -> None:
        """The messages ending with "(상세코드)" are those of 4003 and 6701-6707, as in the source."""
        in_source = {code for code, _, message in source_rows() if message.strip().endswith(PLACEHOLDER["ko"])}
        assert in_source == PLACEHOLDER_CODES
        in_catalog = {e["code"] for e in catalog() if e["messages"]["ko"].endswith(PLACEHOLDER["ko"])}
        assert in_catalog == PLACEHOLDER_CODES

    def test_one_token_per_language(self) -> None:
        """A Korean message ends with "(상세코드)" exactly when its English one ends with
        "(detail code)", and neither token appears anywhere else."""
        for entry in catalog():
            messages = entry["messages"]
            ends = {locale: messages[locale].endswith(token) for locale, token in PLACEHOLDER.items()}
            assert ends["ko"] == ends["en"], entry["code"]
            for locale, token in PLACEHOLDER.items():
                assert messages[locale].count(token) == int(ends[locale]), (entry["code"], locale)
            assert "상세코드" not in messages["en"], entry["code"]
            assert "detail code" not in messages["en"].removesuffix(PLACEHOLDER["en"]).lower(), entry["code"]
