"""Every channel's shell, by channel."""

from __future__ import annotations

from machines.vocabulary import Channel
from service.channels.base import ChannelShell
from service.channels.calls_and_pushes import ARS, PASS
from service.channels.sms import SMS
from service.motp.channel import MOTP

CHANNELS: dict[Channel, ChannelShell] = {
    Channel.SMS: SMS, Channel.ARS: ARS, Channel.PASS: PASS, Channel.MOTP: MOTP,
}
