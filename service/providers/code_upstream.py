"""The port of an upstream that issues and checks the one-time code itself.

In this mode veriflow never sees the code: the upstream checks the subscriber with the carrier,
draws the code, sends it by SMS and later says whether the code the user typed is the one it
sent. (In the other mode veriflow draws the code and only needs an `SmsGateway` to deliver it.)

Both methods raise `ProviderError` when the upstream cannot be reached or answers nonsense (retry
later); a `Refusal` is an answer, not an error.
"""

from __future__ import annotations

from typing import Protocol

from machines.events import Refusal
from service.providers.ports import Subscriber


class CodeUpstream(Protocol):
    async def request_code(self, reference: str, subscriber: Subscriber, service_name: str | None,
                           /) -> str | Refusal:
        """Ask the upstream to check `subscriber` with the carrier, draw a code and send it to
        `subscriber.phone` by SMS, naming `service_name` in the text. `reference` is veriflow's
        verification id, kept by the upstream alongside its own record.

        Returns the upstream's id of this code (PortOne: the `imp_uid`), to pass to
        `confirm_code`, or the refusal (a catalog code) when the carrier or the upstream refuses
        the subscriber."""

    async def confirm_code(self, upstream_id: str, code: str, /) -> Refusal | None:
        """Ask the upstream whether `code` is the code it drew and sent for `upstream_id`: None
        when it is (the identity is proven), else the refusal; a code that does not match is
        `Refusal("2910", variant="code_mismatch")`, the catalog's second 2910 row."""
