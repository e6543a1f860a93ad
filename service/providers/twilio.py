"""Twilio Programmable Messaging, an `SmsGateway`: the mode where veriflow draws the code itself
and an SMS API only delivers the text.

Why Twilio: it is the most widely used programmable SMS API and it delivers to Korean mobile
numbers (+82); its public reference documents every request field and every error the adapter
has to tell apart, each error a stable numeric code in a JSON body, so the mapping below rests
on documentation, not on observed behaviour.

The wire format (Twilio REST API 2010-04-01, the Message resource):

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json
      HTTP Basic auth: AccountSid:AuthToken, or an API key's SID:secret
      application/x-www-form-urlencoded: To (E.164), From or MessagingServiceSid, Body,
      StatusCallback (optional)
      -> 201 Created, the Message resource: {"sid": "SM…", "status": "queued", …}
      -> 4xx/5xx: {"code", "message", "more_info", "status"}

`To` must be E.164: veriflow's Korean numbers (01012345678) become +821012345678; a number that
is neither Korean mobile nor E.164 is refused before anything is sent.

Twilio documents no idempotency key for creating a Message, so none is sent: the outbox delivers
at least once, and a request that timed out after Twilio accepted it is sent again (the same
text, the same code). `reference` goes into the StatusCallback URL, when one is configured, to
tie Twilio's delivery reports to the verification.

Errors, (HTTP status, Twilio code) -> outcome:

    | answer                              | outcome                        | reason |
    | 2xx (201 Created)                   | sent                           | Twilio queued the message; an unreadable body does not change that, and retrying would send it twice |
    | 400 21211 invalid 'To' number       | PermanentSendError 4016        | the number can never receive it; 4016: the information sent to the carrier is wrong |
    | 400 21614 'To' not a mobile number  | PermanentSendError 4016        | as above: not an SMS-capable (mobile) number |
    | 400 21635 'To' is a landline        | PermanentSendError 4016        | as above |
    | 400 21612 'To' not reachable by SMS | PermanentSendError 4016        | unreachable: no route to this number; retrying will not find one |
    | 400 21610 recipient unsubscribed    | PermanentSendError 6756        | blocked: the user opted out (STOP) of this sender; 6756 is the catalog's "message delivery is blocked, unblock and retry" (listed for PASS; the only blocked-message row) |
    | 401 20003 authentication failed     | ProviderError                  | our credentials: configuration, retry after the operators fix them |
    | 404 20404 wrong account             | ProviderError                  | our AccountSid or base URL: configuration |
    | 429 20429 too many requests         | ProviderError                  | "never processed and always safe to retry" (the outbox's back-off, not Retry-After, paces it) |
    | other 4xx (21606 From, 21408 region, 21608 trial, 21617 too long, …) | ProviderError | our sender setup or our text, not the number: retried a few times and logged |
    | 5xx, or no answer within timeout_s  | ProviderError                  | Twilio unavailable: retry later |

`PermanentSendError` is a `ProviderError` (whoever treats ProviderError as "not delivered"
still does) and the outbox's `PermanentFailureError`, so the outbox drops the message instead of
retrying it; its `refusal` is the catalog code a verification can end with.

Delivery failures after Twilio accepted a message (30003 unreachable handset, 30004 blocked,
30005 unknown number, 30006 landline, 30007 filtered) arrive later on the StatusCallback, not in
this answer; receiving them is not this module's work.

No auth token, message text (it holds the code), phone number or Twilio `message` (it quotes the
number) is logged or put in an exception.
"""

from __future__ import annotations

import base64
import re
from http import HTTPStatus
from typing import Any, Final, NoReturn
from urllib.parse import quote, urlencode

import aiohttp
import orjson
import structlog

from machines.events import Refusal
from service.errors import PermanentFailureError, ProviderError

log = structlog.get_logger("veriflow.providers.twilio")

DEFAULT_BASE_URL: Final = "https://api.twilio.com"

# Twilio error code -> (the catalog's refusal, why it is permanent)
PERMANENT: Final[dict[int, tuple[Refusal, str]]] = {
    21211: (Refusal("4016"), "invalid 'To' phone number"),
    21614: (Refusal("4016"), "'To' is not a valid mobile number"),
    21635: (Refusal("4016"), "'To' is a landline"),
    21612: (Refusal("4016"), "'To' is not reachable via SMS"),
    21610: (Refusal("6756"), "the recipient unsubscribed (blocked this sender)"),
}
INVALID_NUMBER: Final = Refusal("4016")

KOREAN_MOBILE: Final = re.compile(r"\+821[016789][0-9]{7,8}", re.ASCII)
E164: Final = re.compile(r"\+[1-9][0-9]{7,14}", re.ASCII)
SEPARATORS: Final = frozenset(" -.()")


def to_e164(phone: str) -> str | None:
    """E.164 for a Korean mobile number in any usual spelling (010-1234-5678, +82 10…, +82 010…,
    0082…), or an E.164 number of another country as it is; None for anything else."""
    number = "".join(ch for ch in phone if ch not in SEPARATORS)
    if number.startswith("00"):
        number = "+" + number[2:]
    if number.startswith("+82"):
        number = "+82" + number[3:].removeprefix("0")
    elif number.startswith("0"):
        number = "+82" + number[1:]
    elif number.startswith("+"):
        return number if E164.fullmatch(number) else None
    return number if KOREAN_MOBILE.fullmatch(number) else None


class PermanentSendError(ProviderError, PermanentFailureError):
    """Twilio refused the message for good (an invalid, unreachable or blocking number)."""

    def __init__(self, refusal: Refusal, twilio_code: int | None) -> None:
        why = f"Twilio error {twilio_code}" if twilio_code is not None else "not a number an SMS can reach"
        super().__init__(f"the message can never be delivered: {why}, catalog {refusal.code}")
        self.refusal = refusal
        self.twilio_code = twilio_code


class TwilioSmsGateway:
    """`SmsGateway` over Twilio's Messages API."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        session: aiohttp.ClientSession,
        timeout_s: float,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        api_key_sid: str | None = None,
        status_callback: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
    ) -> None:
        """Sender: exactly one of `from_number` (a Twilio number or alphanumeric sender id) and
        `messaging_service_sid`. Auth: `account_sid` and its auth token, or `api_key_sid` and
        that key's secret as `auth_token`."""
        if (from_number is None) == (messaging_service_sid is None):
            msg = "give exactly one of from_number and messaging_service_sid"
            raise ValueError(msg)
        self.base_url = base_url.rstrip("/")
        self.account_sid = account_sid
        credentials = f"{api_key_sid or account_sid}:{auth_token}".encode()
        self._headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")}
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.sender = {"From": from_number} if from_number else {"MessagingServiceSid": str(messaging_service_sid)}
        self.status_callback = status_callback

    def __repr__(self) -> str:
        return f"TwilioSmsGateway(account_sid={self.account_sid!r}, base_url={self.base_url!r})"

    @property
    def url(self) -> str:
        return f"{self.base_url}/2010-04-01/Accounts/{quote(self.account_sid, safe='')}/Messages.json"

    def _callback(self, reference: str) -> str | None:
        if self.status_callback is None:
            return None
        joiner = "&" if "?" in self.status_callback else "?"
        return self.status_callback + joiner + urlencode({"reference": reference})

    async def send_sms(self, reference: str, phone: str, text: str) -> None:
        to = to_e164(phone)
        if to is None:
            log.warning("twilio.number_invalid", reference=reference)
            raise PermanentSendError(INVALID_NUMBER, None)
        form = {"To": to, **self.sender, "Body": text}
        callback = self._callback(reference)
        if callback is not None:
            form["StatusCallback"] = callback
        try:
            async with self.session.post(self.url, data=form, headers=self._headers, timeout=self.timeout,
                                         allow_redirects=False) as resp:
                status, raw = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("twilio.unreachable", reference=reference, error=exc.__class__.__name__)
            msg = f"Twilio unreachable: {exc.__class__.__name__}"
            raise ProviderError(msg) from exc
        payload = _json(raw)
        if HTTPStatus.OK <= status < HTTPStatus.MULTIPLE_CHOICES:
            sid = payload.get("sid") if isinstance(payload, dict) else None
            log.info("twilio.sent", reference=reference, sid=sid if isinstance(sid, str) else None)
            return
        self._raise_for(reference, status, payload)

    @staticmethod
    def _raise_for(reference: str, status: int, payload: Any) -> NoReturn:
        code = payload.get("code") if isinstance(payload, dict) else None
        twilio_code = code if isinstance(code, int) and not isinstance(code, bool) else None
        permanent = PERMANENT.get(twilio_code) if twilio_code is not None else None
        if permanent is not None and HTTPStatus.BAD_REQUEST <= status < HTTPStatus.INTERNAL_SERVER_ERROR:
            refusal, why = permanent
            log.warning("twilio.refused", reference=reference, status=status, twilio_code=twilio_code,
                        refusal=refusal.code, why=why)
            raise PermanentSendError(refusal, twilio_code)
        log.warning("twilio.error", reference=reference, status=status, twilio_code=twilio_code)
        msg = f"Twilio answered HTTP {status} (error {twilio_code})"
        raise ProviderError(msg)


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
