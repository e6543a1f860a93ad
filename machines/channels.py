"""The channel machines, built once at import and registered by channel."""

from __future__ import annotations

from machines import ars, motp, pass_push, sms
from machines.common import common_transitions, reply, reply_read
from machines.core import ChannelMachine
from machines.vocabulary import Channel, Code, Status

SMS = ChannelMachine(
    Channel.SMS,
    pending={sms.CODE_SENT: Status.PENDING},
    transitions=[
        *sms.TRANSITIONS,  # channel-specific edges first: transitions tries them in order
        *common_transitions(
            [sms.CODE_SENT],
            expiry_code=Code.NOT_CONFIRMABLE,
            confirm_when_verified=reply(Code.NOT_CONFIRMABLE, 409),
            resend_when_verified=reply(Code.ALREADY_COMPLETED, 409),
        ),
    ],
)

ARS = ChannelMachine(
    Channel.ARS,
    pending=dict.fromkeys(ars.PENDING_STATES, Status.PENDING),
    transitions=[
        *ars.TRANSITIONS,
        *common_transitions(
            ars.PENDING_STATES,
            expiry_code=Code.UNKNOWN_VERIFICATION,  # the 7-minute session of the source catalog
            confirm_when_verified=reply_read,
            resend_when_verified=reply(Code.ARS_ALREADY_CALLED, 409),
        ),
    ],
)

PASS = ChannelMachine(
    Channel.PASS,
    pending=dict.fromkeys(pass_push.PENDING_STATES, Status.PENDING),
    transitions=[
        *pass_push.TRANSITIONS,
        *common_transitions(
            pass_push.PENDING_STATES,
            expiry_code=Code.UNKNOWN_VERIFICATION,
            confirm_when_verified=reply_read,
            resend_when_verified=reply(Code.ALREADY_COMPLETED, 409),
        ),
    ],
)

MOTP = ChannelMachine(
    Channel.MOTP,
    pending={motp.AWAITING_CODE: Status.PENDING},
    transitions=[
        *motp.TRANSITIONS,
        *common_transitions(
            [motp.AWAITING_CODE],
            expiry_code=Code.UNKNOWN_VERIFICATION,  # the 7-minute session of the source catalog
            confirm_when_verified=reply(Code.NOT_CONFIRMABLE, 409),
            resend_when_verified=reply(Code.ALREADY_COMPLETED, 409),
        ),
    ],
)

MACHINES: dict[Channel, ChannelMachine] = {
    Channel.SMS: SMS, Channel.ARS: ARS, Channel.PASS: PASS, Channel.MOTP: MOTP,
}
