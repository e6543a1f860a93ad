"""One error vocabulary. Every answer other than success is an exception of this tree; `as_api_error`
maps each to its catalog code and HTTP status, and `service.api.envelope` renders the envelope.

    VeriflowError
    ├── ApiError                    an answer named by a catalog code (and a status when not the catalog's)
    ├── UnknownVerificationError    no verification of this client has that id, or it is gone; each
    │                               route answers it with its own "unknown" code (contract section 7)
    ├── ClaimTakenError             a unique claim (a live tx_id) belongs to another verification: 4007
    ├── LimitedError                over an abuse limit (contract section 9): 429 3006 with Retry-After;
    │                               the request changed nothing
    ├── UnavailableError            503 9999 "try again in a moment"; the request changed nothing
    │   ├── BusyError               too many concurrent writers on one verification
    │   ├── ProviderError           an upstream could not be reached or answered nonsense
    │   └── StoreUnavailableError   the store is unreachable, loading or failing over
    │                               (service.store.health maps the client's errors to it)
    └── PermanentFailureError       an outbox effect that can never succeed: dropped, not retried

RecordMovedOnError is outside the tree: the transactor's own signal, never an answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from machines.vocabulary import Code

if TYPE_CHECKING:
    from machines.record import Verification

UNAVAILABLE_STATUS = 503


class VeriflowError(Exception):
    """The root of every error the service answers on purpose."""


class ApiError(VeriflowError):
    """An answer other than success, named by its catalog code."""

    def __init__(
        self,
        code: str,
        *,
        http_status: int | None = None,
        detail_code: str | None = None,
        description: str | None = None,
        verification: dict[str, Any] | None = None,
        variant: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(code)
        self.code = code
        self.variant = variant  # the catalog row, for a code listed more than once (2910)
        self.headers = dict(headers or {})
        self.http_status = http_status
        self.detail_code = detail_code
        self.description = description
        self.verification = verification


class UnknownVerificationError(VeriflowError, LookupError):
    """No verification of this client has that id (or it is gone)."""


class ClaimTakenError(VeriflowError):
    """A unique claim (a live tx_id) belongs to another verification."""


class LimitedError(VeriflowError):
    """A request over an abuse limit; `retry_after_s` is the longest wait among those exceeded."""

    def __init__(self, limit: str, retry_after_s: int) -> None:
        super().__init__(f"over the {limit} limit; retry after {retry_after_s} s")
        self.limit = limit
        self.retry_after_s = retry_after_s


class RecordMovedOnError(Exception):
    """Raised by an event builder that learnt its record is no longer the stored one (a limit
    refused a send that a simultaneous request had made meanwhile): the transactor decides the
    step again on `current`, the record that won. Never reaches a client."""

    def __init__(self, current: Verification) -> None:
        super().__init__(f"verification {current.id} moved on to version {current.version}")
        self.current = current


class UnavailableError(VeriflowError):
    """The service cannot answer now; the same request may succeed later."""


class BusyError(UnavailableError):
    """Too many concurrent writers on one verification."""


class ProviderError(UnavailableError):
    """The upstream did not answer usefully; the request can be retried later."""


class StoreUnavailableError(UnavailableError):
    """The store did not answer (down, loading its data, or a cluster slot failing over)."""


class PermanentFailureError(VeriflowError):
    """An effect that can never succeed (a refused callback address, a dead number): dropped, not retried."""


def invalid(description: str) -> ApiError:
    """Malformed JSON, a missing or invalid field: 400 3001, and nothing is created."""
    return ApiError(Code.INVALID_REQUEST, description=description)


def as_api_error(error: VeriflowError) -> ApiError:  # noqa: PLR0911 - one case per error
    """The answer an error gives when no route answered it more precisely."""
    match error:
        case ApiError():
            return error
        case UnknownVerificationError():
            return ApiError(Code.UNKNOWN_VERIFICATION, http_status=404)
        case ClaimTakenError():
            return ApiError(Code.DUPLICATE_TX_ID)
        case LimitedError():
            return ApiError(Code.RATE_LIMITED, description=str(error),
                            headers={"Retry-After": str(error.retry_after_s)})
        case BusyError():
            return ApiError(Code.INTERNAL_ERROR, http_status=UNAVAILABLE_STATUS,
                            description="too many concurrent writes; try again")
        case UnavailableError():
            return ApiError(Code.INTERNAL_ERROR, http_status=UNAVAILABLE_STATUS, description=str(error))
    return ApiError(Code.INTERNAL_ERROR)
