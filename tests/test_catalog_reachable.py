"""Every row and every detail code of config/catalog.yaml is produced through the running service.

For each row (code and variant) and each of its detail codes, a producer of tests/reach.py drives
the real server and its simulator (magic numbers, or the rule that answers it) and the answer is
checked against the row: HTTP status, code, detail code, the row's customer message with the
detail code in the placeholder's place (both languages where the row has a placeholder or a
sibling row), and `retryable`. A row no path produces yet is listed in reach.UNREACHABLE with why
(its test is expected to fail until it does).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import yaml

from tests.conftest import Api
from tests.reach import CASES, UNREACHABLE, Key, clock_of, reported

CATALOG_PATH = Path(__file__).resolve().parent.parent / "config" / "catalog.yaml"
PLACEHOLDERS = {"ko": "(상세코드)", "en": "(detail code)"}


@cache
def rows() -> tuple[dict[str, Any], ...]:
    return tuple(yaml.safe_load(CATALOG_PATH.read_text(encoding="utf-8"))["codes"])


def row_of(code: str, variant: str | None) -> dict[str, Any]:
    return next(r for r in rows() if r["code"] == code and r.get("variant") == variant)


def required() -> list[Key]:
    """Each row without a detail code, and each detail code of each row."""
    keys: list[Key] = []
    for row in rows():
        details = list(row.get("detail_codes") or {})
        keys += [(row["code"], row.get("variant"), d) for d in details] or [(row["code"], row.get("variant"), None)]
    return keys


def walked() -> list[Key]:
    """What the walk produces: the required keys, and a row with detail codes also without one
    where a path answers it so (a magic number of the code alone, a push with no progress)."""
    keys = required()
    return keys + sorted(key for key in CASES if key not in keys)


def expected_message(row: dict[str, Any], locale: str, detail: str | None) -> str:
    text = str(row["messages"][locale])
    placeholder = PLACEHOLDERS[locale]
    if detail:
        return text.replace(placeholder, f"({detail})")
    return text.replace(" " + placeholder, "").replace(placeholder, "")


def params() -> list[Any]:
    found = []
    for key in walked():
        row = row_of(key[0], key[1])
        locales = ["ko"]
        if PLACEHOLDERS["ko"] in row["messages"]["ko"] or row.get("variant"):
            locales.append("en")
        marks = [pytest.mark.xfail(strict=True, reason=UNREACHABLE[key])] if key in UNREACHABLE else []
        found += [pytest.param(key, locale, marks=marks, id="-".join(filter(None, [*key, locale])))
                  for locale in locales]
    return found


@pytest.fixture
async def store_client() -> AsyncIterator[Any]:
    """fakeredis only: the walk is about the answers, which the store tests cover on both."""
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    yield client
    await client.aclose()


def test_every_row_and_detail_code_has_a_way_or_a_reason():
    """The producers name only catalog rows, and every row and detail code has one (or a reason)."""
    needed = set(required())
    rows_alone = {(row["code"], row.get("variant"), None) for row in rows()}
    assert set(CASES) <= needed | rows_alone, set(CASES) - needed - rows_alone
    assert needed <= set(CASES), needed - set(CASES)
    assert set(UNREACHABLE) <= set(CASES)


@pytest.mark.parametrize(("key", "locale"), params())
async def test_the_row_is_produced_through_the_service(api: Api, key: Key, locale: str):
    code, variant, detail = key
    row = row_of(code, variant)
    case = CASES[key]
    status, body = await case.produce(api, {"Accept-Language": locale})
    assert status == (case.status or row["http_status"]), (case.how, body)
    if code == "2000":  # success is the verification itself
        assert (body["status"], body["last_code"], body["last_detail_code"]) == ("verified", "2000", None)
        return
    error = body["error"]
    assert (error["code"], error["detail_code"]) == (code, detail), (case.how, body)
    assert error["message"] == expected_message(row, locale, detail), case.how
    assert PLACEHOLDERS[locale] not in error["message"]
    assert error["retryable"] is row["retryable"], case.how
    if variant and "verification" in body and code == body["verification"]["last_code"]:
        first_row = next(r for r in rows() if r["code"] == code)  # what no variant names
        assert body["verification"].get("last_variant", first_row["variant"]) == variant
    if "verification" in body:
        view = body["verification"]
        assert (view["last_code"], view["last_detail_code"]) in {(code, detail), (None, None), ("2000", None)} or \
            view["status"] in {"expired", "canceled", "completed", "verified"}, (case.how, view)


async def test_the_push_timer_ends_it_6706_with_detail_6203(api: Api):
    """The 6706 of the push timer (no answer within push_timeout_s) names its detail code."""
    status, started = await api.call("POST", "/v1/verifications", {
        "channel": "pass", "subject": {"name": "홍길동", "birth": "19900101", "gender_digit": "1",
                                       "phone": "01055551999", "carrier": "SKT"}})
    assert status == 201
    clock_of(api).advance(api.rt.settings.pass_.push_timeout_s)
    assert await api.rt.timers.run_once() >= 1
    status, body = await api.call("POST", f"/v1/verifications/{started['id']}/confirm", {},
                                  headers={"Accept-Language": "en"})
    assert (status, body["error"]["code"], body["error"]["detail_code"]) == (422, "6706", "6203")
    assert body["error"]["message"].endswith("Please start over. (6203)")


async def test_a_healthy_push_answers_6702_without_a_detail_code(api: Api):
    """No progress reported: 6702 with no detail code, and the placeholder dropped with its space."""
    status, body = await reported("pass")("01055551998")(api, {"Accept-Language": "en"})
    assert (status, body["error"]["code"], body["error"]["detail_code"]) == (409, "6702", None)
    assert body["error"]["message"].endswith("Please complete the verification and try again.")


async def test_the_catalog_serves_variants_and_the_korean_detail_texts(api: Api):
    """GET /v1/catalog: one entry per row as before, plus `variant` (null on a code with one row)
    and `detail_codes_ko` beside `detail_codes`, as the source writes them."""
    status, body = await api.call("GET", "/v1/catalog", key=None)
    assert status == 200
    served = body["codes"]
    assert [(e["code"], e["variant"]) for e in served] == [(r["code"], r.get("variant")) for r in rows()]
    for entry, row in zip(served, rows(), strict=True):
        assert entry["detail_codes_ko"] == (row.get("detail_codes_ko") or {})
        assert set(entry["detail_codes_ko"]) == set(entry["detail_codes"])
    mismatch = next(e for e in served if e["variant"] == "code_mismatch")
    assert (mismatch["retryable"], mismatch["messages"]["ko"]) == (True, "입력하신 정보가 올바르지 않습니다. 인증번호를 확인해주세요.")
