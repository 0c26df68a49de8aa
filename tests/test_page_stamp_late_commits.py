"""Round 19 of the Explore audit: a page keyed on the newest audit event id alone stayed on old data.

On PostgreSQL an operation's event id is drawn before its transaction commits; an operation that commits
after a later one never raised the newest id, so Explore, Review and Bias audit kept showing the store as
it was, and every press on an affected face was refused as a conflict that a reload did not clear. The
pages now key their caches on `audit_stamp`: (number of events, newest id).
"""
from __future__ import annotations

import pytest

from labeling.db import open_store
from labeling.queries import audit_stamp
from labeling.schema import AuditEvent


def _event(editor: str) -> AuditEvent:
    return AuditEvent(editor=editor, operation="approve_faces", summary="x", n_entities=0, before={}, after={})


@pytest.mark.postgres
def test_an_operation_committing_after_a_later_one_changes_the_stamp(pg_url):
    store = open_store(pg_url)
    with store() as bobs, store() as anns, store() as reader:
        bobs.add(_event("bob"))
        bobs.flush()  # bob's id is drawn: 1
        anns.add(_event("ann"))
        anns.commit()  # ann's, 2, commits first
        before = audit_stamp(reader)
        reader.rollback()
        bobs.commit()  # bob's 1 commits late: the newest id stays 2
        after = audit_stamp(reader)
    assert before[1] == after[1] == 2  # what the pages were keyed on: unchanged
    assert before != after  # what they are keyed on now
