"""The audit trail's entries: one compact line per event that changed a verification.

    at|from|to|trigger|actor|code|detail_code

`from` is empty for the creation; `code` and `detail_code` are empty when the event emitted none.
Entries name machine states, triggers, actors and catalog codes only: never personal data. The
detail code, which a provider reports, comes last, so a separator inside it cannot shift a field.
"""

from __future__ import annotations

from typing import Any

from machines.core import Step

CLIENT = "client"
TIMER = "timer"
EXPIRE = "expire"
SEP = "|"


def provider(provider_id: str) -> str:
    return f"provider:{provider_id}"


def actor_of(step: Step, actor: str) -> str:
    """Who caused a step: an expiry is the timer's, even when a read or a request noticed it first."""
    return TIMER if step.trigger == EXPIRE else actor


def encode(step: Step, actor: str, *, creation: bool = False) -> str:
    return SEP.join((str(step.at), "" if creation else step.source, step.dest, step.trigger,
                     actor_of(step, actor), step.code or "", step.detail_code or ""))


def decode(entry: Any) -> dict[str, Any]:
    """An entry as the API shows it; `at` stays Unix milliseconds (the view formats it)."""
    text = entry.decode() if isinstance(entry, bytes) else str(entry)
    at, source, dest, trigger, actor, code, detail = text.split(SEP, 6)
    return {"at": int(at), "from": source or None, "to": dest, "trigger": trigger, "actor": actor,
            "code": code or None, "detail_code": detail or None}
