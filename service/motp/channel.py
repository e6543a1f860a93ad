"""mOTP in the shell: a verification lives in its user's slot, so one decision can change the
verification and the user in one step; confirm matches the code to a TOTP time step."""

from __future__ import annotations

from typing import Any

import structlog

from machines.core import NEW
from machines.events import Event, MotpStart, Resend
from machines.record import Verification
from machines.vocabulary import Channel, Status
from service.api import validation
from service.channels.admission import Admission
from service.channels.base import EventBuilder
from service.motp.enrolment import Motp
from service.providers.ports import Subscriber
from service.runtime import Runtime
from service.store.keys import motp_user_ref, motp_user_shard


def motp(rt: Runtime) -> Motp:
    return Motp(rt.transactor, rt.secrets)


class MotpChannel:
    channel = Channel.MOTP
    takes_over = False  # a person proves who they are to enrol, not by falling back

    async def prepare_start(self, rt: Runtime, client_id: str, body: dict[str, Any],
                            admission: Admission) -> tuple[Verification, Event]:
        start = validation.motp_start_request(body, allow_private=rt.settings.allow_private_callbacks)
        ref = motp_user_ref(client_id, start.user_id)
        verification_id = rt.store.keys.new_id(motp_user_shard(rt.store.keys, ref))
        structlog.contextvars.bind_contextvars(verification_id=verification_id, motp_user=ref)
        now = rt.clock.now_ms()
        record = Verification(
            id=verification_id, client_id=client_id, channel=Channel.MOTP, state=NEW,
            status=Status.PENDING, version=0, definition="", created_at=now, tx_id=start.tx_id,
            callback_url=start.callback_url, service_name=start.service_name, motp_user=ref,
            subject=rt.secrets.seal_subject(start.subject, verification_id),
        )
        # The app shows the codes: an mOTP start counts as a start, never as a send.
        await admission.start(record, start.subject.phone, start.end_user_ip, sending=False)
        m = motp(rt)
        user = await rt.store.load_motp_user(ref)
        refusal = m.start_refusal(user, start.subject.name, start.subject.phone)
        # The transactor claims the tx_id in the tx_id's own shard, like every channel's, so a
        # tx_id is unique across all of them.
        return record, MotpStart(now, user=user, refusal=refusal)

    async def start_event(self, rt: Runtime, record: Verification, subject: Subscriber, now_ms: int) -> Event:
        raise NotImplementedError  # takes_over is False: no fallback hands a verification to mOTP

    def confirm(self, rt: Runtime, body: dict[str, Any]) -> EventBuilder:
        async def event(record: Verification) -> Event:
            return await motp(rt).confirm_event(record, validation.code(body))

        return event

    def resend(self, rt: Runtime) -> EventBuilder:
        """The app shows the codes: the machine answers that there is nothing to send again."""

        async def event(_: Verification) -> Event:
            return Resend(rt.clock.now_ms())

        return event


MOTP = MotpChannel()
