"""The reference the service sends with each request to a provider: `<verification id>:<generation>`.

A provider names it in its report, so a late report about an older call or push cannot act on a
newer one; providers also de-duplicate on it (the same reference is performed once).
"""

from __future__ import annotations

MAX_GENERATION_DIGITS = 6


def reference(verification_id: str, generation: int) -> str:
    return f"{verification_id}:{generation}"


def parse_reference(text: str) -> tuple[str, int] | None:
    verification_id, sep, generation = text.rpartition(":")
    if not sep or not generation.isascii() or not generation.isdigit() or len(generation) > MAX_GENERATION_DIGITS:
        return None
    return verification_id, int(generation)
