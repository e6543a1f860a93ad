"""The code catalog (`config/catalog.yaml`): every code's messages, HTTP status and retryability."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from service.settings import CONFIG_DIR

LOCALES = ("ko", "en")


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


class Catalog:
    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self._by_code: dict[str, Entry] = {}
        for entry in entries:  # a code listed twice (2910) answers with its first row
            self._by_code.setdefault(entry.code, entry)

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
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
            )
            for item in data["codes"]
        ])

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def get(self, code: str) -> Entry:
        return self._by_code[code]

    def as_json(self) -> dict[str, Any]:
        """The catalog as `GET /v1/catalog` serves it (contract section 1)."""
        return {
            "codes": [
                {
                    "code": e.code,
                    "http_status": e.http_status,
                    "retryable": e.retryable,
                    "channels": list(e.channels),
                    "messages": dict(e.messages),
                    "description": e.description,
                    "detail_codes": dict(e.detail_codes),
                    "service_defined": e.service_defined,
                }
                for e in self.entries
            ],
        }


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
