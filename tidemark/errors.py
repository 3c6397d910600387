"""Errors users can see, and the one class for bugs.

Every error a user can cause is a ``TidemarkError``: it names the object, says what is wrong,
and, where there is one, carries a ``hint`` naming the fix. Anything else escaping is a bug and
gets a traceback.

::

    TidemarkError                       message, hint, SQLSTATE code
     ├── StoreError                     opening or using a store
     │    ├── NotAStoreError            the path holds something that is not a tidemark store
     │    ├── StoreVersionError         binary and store versions are incompatible
     │    └── PreconditionFailedError   a guarded write found its guard key changed
     ├── ReadTimestampError             a read at a timestamp that cannot be served
     │    ├── FutureReadError           above the closed timestamp (frontier)
     │    └── GCThresholdError          below the GC threshold: the history is gone
     ├── RetryableError                 try the transaction again (SQLSTATE 40001)
     │    └── TxnConflictError          a read was invalidated by a concurrent commit
     ├── SettingError                   unknown setting or invalid value
     ├── ProtectionError                a protected-timestamp record cannot be made or found
     ├── TransactionError               misuse of a transaction (used after commit, ...)
     ├── JobPausedError                 a job a statement waits on paused (PAUSE JOB, pause point)
     └── SQLError                       raised by the SQL layer, with its own SQLSTATE
          └── SQLSyntaxError            line, column and the offending token
"""

from __future__ import annotations


class TidemarkError(Exception):
    """An error the user caused or can fix; printed without a traceback."""

    code = "XX000"

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\nHINT: {self.hint}"
        return self.message


class StoreError(TidemarkError):
    code = "58030"


class NotAStoreError(StoreError):
    pass


class StoreVersionError(StoreError):
    pass


class PreconditionFailedError(StoreError):
    pass


class ReadTimestampError(TidemarkError):
    code = "XXUUU"


class FutureReadError(ReadTimestampError):
    pass


class GCThresholdError(ReadTimestampError):
    pass


class RetryableError(TidemarkError):
    code = "40001"


class TxnConflictError(RetryableError):
    pass


class SettingError(TidemarkError):
    code = "22023"


class ProtectionError(TidemarkError):
    pass


class TransactionError(TidemarkError):
    code = "25000"


class SQLError(TidemarkError):
    code = "42000"


class SQLSyntaxError(SQLError):
    """A statement that does not parse: carries where (1-based line and column) and the token."""

    code = "42601"

    def __init__(self, message: str, *, line: int, column: int, token: str,
                 hint: str | None = None):
        super().__init__(f"at or near \"{token}\" (line {line}, column {column}): {message}",
                         hint=hint)
        self.line = line
        self.column = column
        self.token = token


class JobPausedError(TidemarkError):
    """A job that a statement was waiting for paused itself or was paused."""

    code = "57014"

    def __init__(self, job_id: int, reason: str):
        super().__init__(f"job {job_id} {reason or 'paused'}",
                         hint=f"RESUME JOB {job_id} continues it; CANCEL JOB {job_id} undoes it")
        self.job_id = job_id
        self.reason = reason
