"""From a decision to the writes of its commit: pure, so every rule here is tested without Redis.

A decision's record fields (only those that changed), its timers, its outbox entries, the mOTP
user it changed, the unique claims it takes or gives back, its audit trail entries and the
client's live and outcome counters become one `CommitOps`, which the store runs as one atomic
script call.
"""

from __future__ import annotations

from dataclasses import dataclass

from machines import motp_user
from machines.core import Decision
from machines.effects import ArmTimer, DisarmTimer, SaveMotpUser
from machines.motp_user import MotpUser
from machines.record import Verification, changed_fields
from machines.vocabulary import Status
from service.effects import entries
from service.settings import Settings
from service.store import audit
from service.store.keys import Keys, motp_user_key, shard_in, timer_member
from service.store.store import CommitOps, Companion

CLAIM_MARGIN_S = 60  # a tx_id claim outlives its verification's last deadline by this much
OUTCOME_BUCKET_MS = 300_000  # outcomes are counted per client in buckets of five minutes
OUTCOME_KEEP_MS = 3_600_000  # kept for an hour after their bucket closes
CODED_OUTCOMES = (Status.VERIFIED, Status.FAILED, Status.EXPIRED)  # canceled, completed: no code of their own


@dataclass(frozen=True, slots=True)
class Claim:
    """A unique key a commit takes (a live tx_id, a provider event id), held by `value`."""

    key: str
    value: str
    ttl_ms: int


class CommitPlanner:
    def __init__(self, keys: Keys, settings: Settings) -> None:
        self.keys = keys
        self.settings = settings

    def tx_claim(self, record: Verification) -> Claim | None:
        """The claim that keeps a client's tx_id unique among its live verifications."""
        if not record.tx_id:
            return None
        shard = self.keys.tx_shard(record.client_id, record.tx_id)
        live_s = self.settings.session_ttl_s(record.channel) + self.settings.result_ttl_s + CLAIM_MARGIN_S
        return Claim(self.keys.tx_claim(shard, record.client_id, record.tx_id), record.id, live_s * 1000)

    def claim_in_slot(self, record: Verification) -> bool:
        """Most verifications live in their tx_id's shard; an mOTP one lives in its user's."""
        return record.tx_id is None or self.keys.tx_shard(record.client_id, record.tx_id) == shard_in(record.id)

    def ops(self, decision: Decision, now_ms: int, fired_timer: str | None = None,
            claims: tuple[Claim, ...] = (), actor: str = audit.CLIENT) -> CommitOps:
        before, after = decision.before, decision.record
        version = before.version + 1
        after_versioned = after.evolve(version=version)
        fields, deleted = changed_fields(None if before.version == 0 else before, after_versioned, decision.touched)
        fields.pop("version", None)  # the script writes the version itself
        shard = shard_in(after.id)
        ops = CommitOps(
            record_key=self.keys.record(after.id),
            timers_key=self.keys.timers(shard),
            outbox_key=self.keys.outbox(shard),
            expected_version=before.version,
            new_version=version,
            ttl_ms=self.record_ttl_ms(after, now_ms),
            fields=fields,
            deleted=deleted,
            claims=[(c.key, c.value, c.ttl_ms) for c in claims],
            counts=self.counts(decision, now_ms),
            after=after_versioned,
        )
        if decision.steps:  # the audit trail: one field of the record per commit (see service.store.audit)
            ops.fields[audit.field_name(version)] = audit.encode_all(decision.steps, actor,
                                                                      creation=before.version == 0)
        if after.tx_id and not after.is_live:  # found by tx_id once its tx claim is given back
            lookup = self.keys.tx_lookup(shard, after.client_id, after.tx_id)
            ops.links.append((lookup, after.id if decision.ended else ""))
        if fired_timer is not None:
            ops.timers_remove.append(fired_timer)
        for effect in decision.effects:
            match effect:
                case ArmTimer(kind, due):
                    ops.timers_add.append((due, timer_member(after.id, kind, due)))
                case DisarmTimer(kind, due):
                    ops.timers_remove.append(timer_member(after.id, kind, due))
                case SaveMotpUser(user_before, user_after):
                    ops.companion = self.companion(user_before, user_after)
                case _:
                    entry = entries.encode(effect, after_versioned)
                    if entry is not None:
                        ops.outbox.append(entry)
        claim = self.tx_claim(after)
        if decision.ended and claim is not None and self.claim_in_slot(after):
            ops.releases.append((claim.key, claim.value))
        return ops

    def counts(self, decision: Decision, now_ms: int) -> list[tuple[str, str, int, int]]:
        """The client's live verifications by `channel|state` (exact as of each commit: one whose
        deadline passed counts until its timer or a read expires it), and its outcomes by
        `channel|status|code` in five-minute buckets."""
        before, after = decision.before, decision.record
        shard = shard_in(after.id)
        was = f"{before.channel}|{before.state}" if before.version > 0 and before.is_live else None
        now = f"{after.channel}|{after.state}" if after.is_live else None
        out: list[tuple[str, str, int, int]] = []
        if was != now:
            live = self.keys.live(shard, after.client_id)
            if was is not None:
                out.append((live, was, -1, 0))
            if now is not None:
                out.append((live, now, 1, 0))
        if after.status is not before.status and after.status is not Status.PENDING:
            code = (after.last_code or "") if after.status in CODED_OUTCOMES else ""
            bucket = now_ms // OUTCOME_BUCKET_MS
            ttl_ms = (bucket + 1) * OUTCOME_BUCKET_MS + OUTCOME_KEEP_MS - now_ms
            out.append((self.keys.outcomes(shard, after.client_id, bucket),
                        f"{after.channel}|{after.status}|{code}", 1, ttl_ms))
        return out

    def companion(self, before: MotpUser, after: MotpUser) -> Companion:
        fields, deleted = motp_user.changed_fields(before, after)
        return Companion(motp_user_key(self.keys, after.ref), before.version, before.version + 1, fields, deleted)

    def record_ttl_ms(self, record: Verification, now_ms: int) -> int:
        """Live records outlast their deadline; finished ones stay readable for record_ttl_s."""
        keep_ms = self.settings.record_ttl_s * 1000
        if not record.is_live:  # counted from its end, however late a later commit comes
            return max((record.ended_at or now_ms) + keep_ms - now_ms, 1)
        deadline = record.result_expires_at if record.status is Status.VERIFIED else record.expires_at
        return max((deadline or 0) - now_ms, 0) + keep_ms
