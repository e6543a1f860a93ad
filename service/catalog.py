"""The code catalog (`config/catalog.yaml`): every code's messages, HTTP status and retryability.

A row is addressed by its code and, for a code listed more than once (2910), its variant:
`Catalog.get("2910", "code_mismatch")`; without a variant a code answers with its first row. The
second error dialects (`config/error_dialects.yaml`) are loaded with it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from service.settings import CONFIG_DIR

LOCALES = ("ko", "en")
# The detail-code placeholder that ends some customer messages (contract section 2), with the
# space before it when there is one: it becomes "(6061)", or goes when there is no detail code.
PLACEHOLDER = re.compile(r"( ?)\((?:상세코드|detail code)\)")


@dataclass(frozen=True, slots=True)
class Entry:
    code: str
    http_status: int
    retryable: bool
    channels: tuple[str, ...]
    messages: Mapping[str, str]
    description: str
    detail_codes: Mapping[str, str]
    service_defined: bool
    raw: Mapping[str, Any]
    variant: str | None = None  # only on a code with several rows
    detail_codes_ko: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def address(self) -> str:
        """`code`, or `code/variant` for a code with several rows (the dialect tables' keys)."""
        return f"{self.code}/{self.variant}" if self.variant else self.code

    def message(self, locale: str, detail_code: str | None = None) -> str:
        """The customer message in `locale`, its placeholder replaced by the detail code."""
        def fill(found: re.Match[str]) -> str:
            return f"{found[1]}({detail_code})" if detail_code else ""

        return PLACEHOLDER.sub(fill, self.messages[locale])


class Catalog:
    def __init__(self, entries: list[Entry], dialects: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.entries = entries
        self._by_code: dict[str, Entry] = {}
        self._by_address: dict[tuple[str, str | None], Entry] = {}
        for entry in entries:  # a code listed twice (2910) answers with its first row
            self._by_code.setdefault(entry.code, entry)
            self._by_address[entry.code, entry.variant] = entry
        # dialect -> row address (`code` or `code/variant`) -> that dialect's code
        self.dialects: Mapping[str, Mapping[str, str]] = dialects or {}

    @classmethod
    def load(cls, path: Path | None = None, dialects_path: Path | None = None) -> Catalog:
        data = yaml.safe_load((path or CONFIG_DIR / "catalog.yaml").read_text(encoding="utf-8"))
        return cls([
            Entry(
                code=str(item["code"]),
                http_status=int(item["http_status"]),
                retryable=bool(item["retryable"]),
                channels=tuple(item["channels"]),
                messages=item["messages"],
                description=item["description"],
                detail_codes={str(k): v for k, v in (item.get("detail_codes") or {}).items()},
                service_defined=bool(item.get("service_defined", False)),
                raw=item,
                variant=item.get("variant"),
                detail_codes_ko={str(k): v for k, v in (item.get("detail_codes_ko") or {}).items()},
            )
            for item in data["codes"]
        ], load_dialects(dialects_path))

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def get(self, code: str, variant: str | None = None) -> Entry:
        """The row of `code` and `variant`; a code's first row when no variant (or one it does not
        have) is named. KeyError for a code the catalog does not list."""
        if variant is not None and (code, variant) in self._by_address:
            return self._by_address[code, variant]
        return self._by_code[code]

    def dialect_code(self, dialect: str, entry: Entry) -> str:
        """The code `dialect` answers for the row `entry`: its own where it maps one, else veriflow's."""
        return self.dialects.get(dialect, {}).get(entry.address, entry.code)

    def as_json(self) -> dict[str, Any]:
        """The catalog as `GET /v1/catalog` serves it (contract section 1)."""
        return {
            "codes": [
                {
                    "code": e.code,
                    "variant": e.variant,
                    "http_status": e.http_status,
                    "retryable": e.retryable,
                    "channels": list(e.channels),
                    "messages": dict(e.messages),
                    "description": e.description,
                    "detail_codes": dict(e.detail_codes),
                    "detail_codes_ko": dict(e.detail_codes_ko),
                    "service_defined": e.service_defined,
                }
                for e in self.entries
            ],
        }


def load_dialects(path: Path | None = None) -> dict[str, dict[str, str]]:
    """`config/error_dialects.yaml`: dialect -> row address -> the dialect's code."""
    data = yaml.safe_load((path or CONFIG_DIR / "error_dialects.yaml").read_text(encoding="utf-8")) or {}
    return {str(name): {str(k): str(v) for k, v in table.items()} for name, table in data.items()}


def pick_locale(accept_language: str | None) -> str:
    """The supported language the client weighs highest (RFC 9110 q-values); Korean by default."""
    best, best_weight = "ko", 0.0
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                weight = float(value)
            except ValueError:
                weight = 0.0
        language = tag.strip().lower()[:2]
        # Ties go to the earlier entry: a tiny position penalty keeps the order stable.
        if language in LOCALES and weight > 0 and weight - position * 1e-6 > best_weight:
            best, best_weight = language, weight - position * 1e-6
    return best
