"""The audit trail's entries: one compact line per event that changed a verification.

    at|from|to|trigger|actor|code|detail_code

The events of one commit are one field of the record itself, named `@<version>` (the version the
commit writes), their lines joined by a newline. So the trail is written by the very HSET that
writes the transition, lives exactly as long as the record, sits in its slot, and costs no key of
its own (about 50 bytes an event, in the record's listpack). `from` is empty for the creation;
`code` and `detail_code` are empty when the event emitted none. Entries name machine states,
triggers, actors and catalog codes only: never personal data. The detail code, which a provider
reports, comes last, so a separator inside it cannot shift a field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from machines.core import Step

CLIENT = "client"
TIMER = "timer"
EXPIRE = "expire"
SEP = "|"
PREFIX = "@"


def provider(provider_id: str) -> str:
    return f"provider:{provider_id}"


def actor_of(step: Step, actor: str) -> str:
    """Who caused a step: an expiry is the timer's, even when a read or a request noticed it first."""
    return TIMER if step.trigger == EXPIRE else actor


def field_name(version: int) -> str:
    return f"{PREFIX}{version}"


def encode(step: Step, actor: str, *, creation: bool = False) -> str:
    return SEP.join((str(step.at), "" if creation else step.source, step.dest, step.trigger,
                     actor_of(step, actor), step.code or "", step.detail_code or ""))


def encode_all(steps: Iterable[Step], actor: str, *, creation: bool = False) -> str:
    """A commit's events, oldest first; only the first event of a creation has no `from`."""
    return "\n".join(encode(step, actor, creation=creation and n == 0) for n, step in enumerate(steps))


def decode(entry: str) -> dict[str, Any]:
    """An entry as the API shows it; `at` stays Unix milliseconds (the view formats it)."""
    at, source, dest, trigger, actor, code, detail = entry.split(SEP, 6)
    return {"at": int(at), "from": source or None, "to": dest, "trigger": trigger, "actor": actor,
            "code": code or None, "detail_code": detail or None}


def events_of(raw: Mapping[Any, Any]) -> list[dict[str, Any]]:
    """The trail held in a record's raw hash (bytes or str), oldest first."""
    commits: list[tuple[int, str]] = []
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name.startswith(PREFIX) and name[1:].isdigit():
            commits.append((int(name[1:]), value.decode() if isinstance(value, bytes) else str(value)))
    return [decode(line) for _, lines in sorted(commits) for line in lines.split("\n") if line]
