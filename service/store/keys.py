"""Every Redis key the service uses, in one place.

Keys of one verification, its shard's timer set and its shard's outbox share a hash tag
(`vf:{S}:…`), so every commit touches one slot and runs unchanged on Redis Cluster.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib

from machines.vocabulary import TimerKind

ID_PATTERN = re.compile(r"[0-9a-f]{28}", re.ASCII)  # fullmatch: no trailing newline
SERVICE_KEY = "vf:{secret}:service-key"


def digest(text: str) -> str:
    """A short stable digest for client-chosen names inside keys (bounded length, no `{}`).

    Unkeyed on purpose, and only ever given identifiers a client chose for its own requests (a
    tx_id, an Idempotency-Key, an mOTP user id) or a provider's event id, never a subject field:
    those are opaque references the contract does not count as personal data, and `Keys` names
    keys before the service key is known (the development key itself is read from the store).
    Anything derived from a name, birth date or phone number goes through a keyed digest
    instead (`Secrets`, and the limiter's `keyed_digest_for`)."""
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class Keys:
    def __init__(self, shards: int) -> None:
        self.shards = shards

    def shard_of(self, text: str) -> int:
        return zlib.crc32(text.encode()) % self.shards

    def any_shard(self) -> int:
        """A random shard, for a verification nothing else needs to share a slot with. Not the
        phone's: a verification id shows its shard, and an unkeyed function of the phone would
        give away some of its digits to whoever reads the id."""
        return secrets.randbelow(self.shards)

    def new_id(self, shard: int) -> str:
        """A verification id: its shard in 4 hex digits, then 96 random bits."""
        return f"{shard:04x}{secrets.token_hex(12)}"

    def shard_of_id(self, verification_id: str) -> int | None:
        """The shard an id names, or None for a malformed or foreign id."""
        if not ID_PATTERN.fullmatch(verification_id):
            return None
        shard = shard_in(verification_id)
        return shard if shard < self.shards else None

    def record(self, verification_id: str) -> str:
        return f"vf:{{{shard_in(verification_id)}}}:v:{verification_id}"

    def timers(self, shard: int) -> str:
        return f"vf:{{{shard}}}:timers"

    def outbox(self, shard: int) -> str:
        return f"vf:{{{shard}}}:outbox"

    def tx_claim(self, shard: int, client_id: str, tx_id: str) -> str:
        return f"vf:{{{shard}}}:tx:{digest(client_id + chr(0) + tx_id)}"

    def event_claim(self, shard: int, provider: str, event_id: str) -> str:
        """A provider event id, claimed in its verification's slot by the commit that acts on it."""
        return f"vf:{{{shard}}}:event:{digest(provider + chr(0) + event_id)}"

    def tx_shard(self, client_id: str, tx_id: str) -> int:
        """Where a client's tx_id is claimed: the same shard whatever the channel, so it is unique."""
        return self.shard_of(f"{client_id}\0{tx_id}")

    def tx_lookup(self, shard: int, client_id: str, tx_id: str) -> str:
        """The newest finished verification of a client's tx_id in `shard` (its own), as long as its
        record lives: the tx claim, which names a live one, is given back when it ends."""
        return f"vf:{{{shard}}}:txv:{digest(client_id + chr(0) + tx_id)}"

    def live(self, shard: int, client_id: str) -> str:
        """A client's live verifications in `shard`, counted by `channel|state`."""
        return f"vf:{{{shard}}}:live:{digest(client_id)}"

    def outcomes(self, shard: int, client_id: str, bucket: int) -> str:
        """A client's outcomes in `shard` during one bucket of time, counted by `channel|status|code`."""
        return f"vf:{{{shard}}}:outcomes:{digest(client_id)}:{bucket}"

    def idempotency(self, client_id: str, key: str) -> str:
        tag = digest(client_id + chr(0) + key)
        return f"vf:{{idem:{tag}}}:response"

    def all_timers(self) -> list[str]:
        return [self.timers(shard) for shard in range(self.shards)]

    def all_outboxes(self) -> list[str]:
        return [self.outbox(shard) for shard in range(self.shards)]


def shard_in(verification_id: str) -> int:
    """The shard a well-formed id carries in its first four hex digits."""
    return int(verification_id[:4], 16)


def timer_member(verification_id: str, kind: str, due_ms: int) -> str:
    """Timers are named by their deadline: re-arming makes a new member, never reuses one."""
    return f"{verification_id}|{kind}|{due_ms}"


def parse_timer_member(member: str) -> tuple[str, TimerKind, int]:
    """The verification, kind and deadline a timer names; ValueError for a malformed one."""
    verification_id, kind, due = member.split("|")
    return verification_id, TimerKind(kind), int(due)


# ---- mOTP users: one hash per (client, user id), in the slot of the user's verifications ----


def motp_user_ref(client_id: str, user_id: str) -> str:
    """The digest that names a client's mOTP user: users of different clients never meet."""
    return digest("motp" + chr(0) + client_id + chr(0) + user_id)


def motp_user_key(keys: Keys, user_ref: str) -> str:
    return f"vf:{{{motp_user_shard(keys, user_ref)}}}:motp:{user_ref}"


def motp_user_shard(keys: Keys, user_ref: str) -> int:
    """The user's shard; its mOTP verifications are created there too (their ids carry it)."""
    return keys.shard_of(user_ref)
