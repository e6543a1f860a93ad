"""The pure core: one declarative state machine per channel, no I/O.

Given a stored verification, an event and the channel's policy, `decide` returns the next
record, the reply to give and the effects the shell must perform. Nothing here imports
redis, aiohttp or `service`.
"""
