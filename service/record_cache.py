"""Live records a process keeps from its own commits, so that its next step on one skips the read.

A kept copy is only a guess at the stored record: the commit that follows a decision on it is a
compare-and-set on its version, so a copy another process has since moved on makes that commit
lose (the script then answers the current record, and the step is decided again on it). A
decision that changes nothing commits nothing, so nothing checks the copy: the transactor reads
the record before answering from it. Only live records are kept (an ended one has no more steps),
at most `capacity`, the least recently committed going first, and none past its deadline (one
another process ended lingers no longer than its session would have): what a copy holds is what
the store holds, personal data sealed, and it goes when the store's would.
"""

from __future__ import annotations

from collections import OrderedDict

from machines.record import Verification
from machines.vocabulary import Status


class RecordCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._records: OrderedDict[str, Verification] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def get(self, verification_id: str) -> Verification | None:
        return self._records.get(verification_id)

    def keep(self, record: Verification, now_ms: int) -> None:
        """`record` as the store now holds it (its new version): kept while it is live."""
        records = self._records
        records.pop(record.id, None)
        if record.is_live and self.capacity > 0:
            records[record.id] = record
            if len(records) > self.capacity:
                records.popitem(last=False)
        while records and _deadline(next(iter(records.values()))) <= now_ms:  # oldest commits first
            records.popitem(last=False)

    def drop(self, verification_id: str) -> None:
        self._records.pop(verification_id, None)


def _deadline(record: Verification) -> int:
    """When the record stops being live at the latest: its result's deadline once verified."""
    if record.status is Status.VERIFIED and record.result_expires_at is not None:
        return record.result_expires_at
    return record.expires_at
