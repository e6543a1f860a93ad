"""Each catalog row's `channels` are the channels on which the service can answer its code.

What a channel can answer is derived from the machine definitions (machines.channels.MACHINES):
every callback of every transition either carries its code in its name (`reply_4013`,
`fail_4301`, `expire_4018`, `fail_4301_offering_fallback`), or is listed below with the codes it
answers (a wrong code, a provider's report, an upstream's refusal), or answers none. A callback
that is none of these fails the test, so a new edge in a machine is classified here before the
catalog can drift from it. To that come the codes the HTTP shell answers itself for a
verification of any channel (validation, API keys, idempotency, unknown ids, ...), and the
upstreams' refusals the contract names for each channel (section 5). A code with several rows
(2910) is counted per row, as `code/variant`: the refusals below name the row they produce.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from machines import ars, common, fallback, motp, pass_push, reports, sms
from machines.channels import MACHINES
from machines.vocabulary import Channel, Code

CATALOG_PATH = Path(__file__).resolve().parent.parent / "config" / "catalog.yaml"
ALL = frozenset(channel.value for channel in Channel)
CODE_IN_NAME = re.compile(r"^(?:reply|fail|expire)_(\d{4}|AP\d{3})(?:_\w+)?$")
CALLBACK_KEYS = ("prepare", "before", "after")

# Upstream refusals by channel and the point where the upstream answers (contract section 5):
# the carrier's subscriber check at start, the SMS carrier's add-on checks at confirm of a
# matching code, the PASS gateway's refusals at start; for mOTP the service's own user check
# (an unknown user, or a name or phone that differs from the registration) takes that place.
# 9998 is the upstream's "the subject's data is missing or invalid"; 2910/code_mismatch the
# carrier's own check of the typed code, asked with the add-on checks.
REFUSALS: dict[tuple[Channel, str], frozenset[str]] = {
    (Channel.SMS, "start"): frozenset({"2910/subscriber", "4016", "9998"}),
    (Channel.SMS, "confirm"): frozenset({"4022", "4023", "2910/code_mismatch"}),
    # An upstream that checks the code itself (PortOne) and no longer knows the request.
    (Channel.SMS, "upstream_confirm"): frozenset({"4018"}),
    (Channel.ARS, "start"): frozenset({"2910/subscriber", "4016", "9998"}),
    (Channel.PASS, "start"): frozenset({"6701", "6704", "6707", "6751", "6752", "6753", "6754", "6755",
                                        "6756", "6757", "9998"}),
    (Channel.MOTP, "start"): frozenset({"AP005"}),
}
REFUSAL_CALLBACKS: dict[Callable[..., Any], str] = {
    common.fail_with_refusal: "start",
    fallback.fail_with_refusal: "start",
    sms.hold_for_addon_check: "confirm",
    sms.answer_upstream_refusal: "upstream_confirm",
}
# Callbacks that answer fixed codes their names do not carry.
FIXED_CODES: dict[Callable[..., Any], frozenset[str]] = {
    common.grant: frozenset({Code.SUCCESS}),
    motp.accept: frozenset({Code.SUCCESS}),  # grants
    sms.count_wrong_code: frozenset({Code.WRONG_CODE}),
    ars.note_wrong_digits: frozenset({Code.ARS_WRONG_DIGITS}),
    ars.fail_with_report: ars.CALL_OUTCOMES,
    pass_push.fail_with_report: pass_push.PUSH_OUTCOMES,
    pass_push.push_failed_at_start: frozenset({Code.PUSH_FAILED}),
    pass_push.push_failed_later: frozenset({Code.PUSH_FAILED}),
    pass_push.note_progress: frozenset(),  # a 6702 report: noted, answered by reply_not_finished
    pass_push.reply_not_finished: frozenset({Code.APP_NOT_FINISHED}),
    motp.count_failure: frozenset({Code.MOTP_MISMATCH}),
    motp.refuse_spent_step: frozenset({Code.MOTP_MISMATCH}),
}
# Callbacks that answer no code of their own (reply_last_code repeats the one that ended it).
CODELESS: frozenset[Callable[..., Any]] = frozenset({
    common.open_session, common.redeem, common.cancel, common.reply_last_code, common.reply_read,
    sms.send_new_code, sms.note_upstream_code, sms.spend_resend, sms.exhaust_attempts,
    ars.open_call_session, ars.place_call, ars.exhaust_calls,
    pass_push.open_push_session, pass_push.send_push, pass_push.stop_push_timer,
    motp.begin, motp.count_failure_and_lock,
    fallback.close_fallback, fallback.hand_over, reports.ignore,
})
# Answered by the HTTP shell, not by a machine, for a verification of any channel: 3001 invalid
# requests (section 2), 3002/3003 Idempotency-Key reuse and replay, 4101 a missing or wrong API
# key, 9999 an unhandled error or an unreachable store or provider (503), 4001/4003/4018 an id
# that names none of the client's verifications (GET and cancel / resend / confirm), 4007 a
# tx_id already claimed at start, 4000 a key token that is unknown, spent or expired (results,
# mOTP unlock), 3007/3008 a path no route has and a method the route does not take.
SHELL_ALL = frozenset({"3001", "3002", "3003", "4101", "9999", "4001", "4003", "4018", "4007", "4000",
                       "3007", "3008"})
SHELL: dict[str, frozenset[str]] = {
    **dict.fromkeys(SHELL_ALL, ALL),
    "3004": frozenset({"ars", "pass"}),  # provider webhooks carry only ARS call results and PASS answers
    "AP005": frozenset({"motp"}),  # the mOTP user routes: unknown user, unlock by another person
    "AP011": frozenset({"motp"}),  # mOTP registration of a locked user
}
# Rows that no path answers yet, with the channels the contract gives them.
NOT_YET: dict[tuple[str, str | None], frozenset[str]] = {
    ("3006", None): ALL,  # the abuse limits of section 9: every send and start, on every channel
}


def callbacks(transition: dict[str, Any]) -> list[Callable[..., Any]]:
    found = []
    for key in CALLBACK_KEYS:
        value = transition.get(key) or []
        found += value if isinstance(value, list) else [value]
    assert all(callable(fn) for fn in found), transition
    return found


def codes_of_callback(channel: Channel, fn: Callable[..., Any]) -> frozenset[str]:
    named = CODE_IN_NAME.match(getattr(fn, "__name__", ""))
    if named:
        return frozenset({named[1]})
    if fn in FIXED_CODES:
        return frozenset(str(code) for code in FIXED_CODES[fn])
    if fn in REFUSAL_CALLBACKS:
        return REFUSALS.get((channel, REFUSAL_CALLBACKS[fn]), frozenset())
    assert fn in CODELESS, f"{channel}: unclassified callback {fn.__module__}.{fn.__qualname__}"
    return frozenset()


@cache
def machine_codes() -> dict[str, frozenset[str]]:
    """Code -> the channels whose machine can answer it."""
    found: dict[str, set[str]] = {}
    for channel, machine in MACHINES.items():
        codes: set[str] = set()
        for transition in machine.transitions:
            for fn in callbacks(transition):
                codes |= codes_of_callback(channel, fn)
        if fallback.FALLBACK_TRIGGER not in machine.triggers:
            codes.add(Code.FALLBACK_NOT_OFFERED)  # fallback.decide answers it for such a channel
        for code in codes:
            found.setdefault(code, set()).add(channel.value)
    return {code: frozenset(channels) for code, channels in found.items()}


@cache
def answered() -> dict[str, frozenset[str]]:
    """Code -> the channels on which the service can answer it (machines and shell)."""
    codes = dict(machine_codes())
    for code, channels in SHELL.items():
        codes[code] = codes.get(code, frozenset()) | channels
    return codes


def address(entry: dict[str, Any]) -> str:
    """A row as the refusals name it: `code`, or `code/variant` for a code with several rows."""
    return f"{entry['code']}/{entry['variant']}" if entry.get("variant") else str(entry["code"])


@cache
def catalog() -> tuple[dict[str, Any], ...]:
    return tuple(yaml.safe_load(CATALOG_PATH.read_text(encoding="utf-8"))["codes"])


class TestCatalogChannels:
    def test_every_machine_callback_is_classified(self) -> None:
        """Walking the machines finds codes for all four channels, and no unclassified callback."""
        codes = machine_codes()
        assert codes["4013"] == {"sms"}
        assert codes["4602"] == {"ars"}
        assert codes["4018"] == ALL
        assert codes[Code.MOTP_MISMATCH] == {"motp"}

    def test_every_answered_code_is_in_the_catalog(self) -> None:
        """A code the service can answer has a catalog row."""
        listed = {address(entry) for entry in catalog()}
        assert set(answered()) <= listed, set(answered()) - listed

    def test_channels_are_the_channels_that_answer_the_code(self) -> None:
        """Each row lists exactly the channels on which the service can answer its code."""
        for entry in catalog():
            code, variant = entry["code"], entry.get("variant")
            if (code, variant) in NOT_YET:
                expected = NOT_YET[code, variant]
            else:
                expected = answered().get(address(entry), frozenset())
            assert set(entry["channels"]) == expected, (code, variant, sorted(expected))

    def test_rows_not_answered_yet_are_none_the_machines_answer(self) -> None:
        """The rows kept for what no path answers yet are truly not answered by any channel."""
        for code, variant in NOT_YET:
            if variant is None:
                assert code not in answered(), code

    def test_known_fixes(self) -> None:
        """4018 is answered on every channel (contract section 7); ARS never answers 4013 (its wrong
        digits are 4602)."""
        rows = {(entry["code"], entry.get("variant")): entry for entry in catalog()}
        assert set(rows["4018", None]["channels"]) == ALL
        assert rows["4013", None]["channels"] == ["sms"]
