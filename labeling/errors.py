"""Errors an editor can see: each says what was refused and why; none leaves a partial write."""
from __future__ import annotations

from datetime import datetime, timezone


def as_utc(moment: datetime) -> datetime:
    """The moment in UTC, for messages that label it "UTC". SQLite hands timestamps back without a zone
    (they are stored in UTC); PostgreSQL with one, in the session's zone (a server in New York)."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def utc_text(moment: datetime) -> str:
    """An audit time as `2026-12-06 13:51:59 UTC`, the one way the CLI, the pages and conflict messages print
    it. Why: PostgreSQL hands a timestamptz back in the session's time zone (a server set up in New York
    answers in New York time), SQLite in UTC without a zone; the same operation must read the same on every
    page, command and server."""
    return f"{as_utc(moment):%Y-%m-%d %H:%M:%S} UTC"


class StoreError(ValueError):
    """Base of every refusal by a curation operation (the transaction is rolled back)."""


class ValidationError(StoreError):
    """Bad input: a name, a confidence, an attribute value."""


class NotFoundError(StoreError):
    """An id that does not exist (or is of the wrong kind)."""


class ConflictError(StoreError):
    """The edit was based on a stale version: someone else changed the entity first."""

    def __init__(self, entity: str, expected: int, actual: int, editor: str | None, at: datetime | None,
                 message: str | None = None) -> None:
        who = editor or "another process"
        when = f" at {utc_text(at)}" if at else ""
        super().__init__(message or (
            f"{entity} was changed by {who}{when} (version {actual}, your edit was based on version {expected}); "
            "reload it and try again"))
        self.entity, self.expected, self.actual, self.editor, self.at = entity, expected, actual, editor, at


class UndoError(StoreError):
    """An operation cannot be undone, e.g. because a later operation changed the same entities."""


class ConcurrentWriteError(ConflictError):
    """Two editors created the same row at the same moment (a first label of a face, a class name).

    Why a subclass: row locks cannot guard a row that does not exist yet, so on PostgreSQL the
    second writer meets the unique constraint at insert; the editor must see a conflict, not a
    database error."""

    def __init__(self, what: str) -> None:
        StoreError.__init__(self, f"another editor saved {what} at the same moment; nothing of yours was saved: "
                                  "reload and try again")
        self.entity, self.expected, self.actual, self.editor, self.at = what, None, None, None, None

    @classmethod
    def naming(cls, stale: ConflictError) -> "ConcurrentWriteError":
        """The collision as the stale edit it was, once the winner is known (who, when, which operation):
        the same refusal, of the type a collision on a unique key has always raised."""
        error = cls.__new__(cls)
        ConflictError.__init__(error, stale.entity, stale.expected, stale.actual, stale.editor, stale.at, str(stale))
        return error


class TagExistsError(ConflictError):
    """Adding a tag a media item already carries (active): refused, never an overwrite.

    Why a conflict: adding means the editor expected no such tag (version 0); the one there may be
    another editor's, with a confidence they chose, so it is kept and its confidence is edited instead."""

    def __init__(self, message: str, entity: str, actual: int, editor: str | None, at: datetime | None) -> None:
        StoreError.__init__(self, message)
        self.entity, self.expected, self.actual, self.editor, self.at = entity, 0, actual, editor, at
