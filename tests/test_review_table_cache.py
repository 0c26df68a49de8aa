"""The Review page reads and computes its tables once per change of the store, not on every rerun (a tick in a
table reruns the whole page: at 5,000 faces that was most of a second per tick). Driven headless with
streamlit.testing.v1.AppTest on tests/test_review_own_changes_and_filters.py's small synthetic store: a rerun with no write
reads nothing again, and a write by another editor, audited or not (an ingest without an editor), shows on the
next rerun."""
from __future__ import annotations

import numpy as np
import pytest

import explorer.clusters
import labeling.queries
from labeling.face_labels import reject_faces
from test_app_decision_ticks_and_filters import _tick
from test_app_pages import no_exception
from test_review_own_changes_and_filters import _add_faces, _table, review, synthetic  # noqa: F401 (fixtures)


@pytest.fixture
def calls(monkeypatch) -> dict[str, int]:
    """How often the page runs the expensive reads/computations (the real ones, counted)."""
    counts = {"faces_frame": 0, "suspect_faces": 0, "tracks_frame": 0}
    for module, name in ((labeling.queries, "faces_frame"), (explorer.clusters, "suspect_faces"),
                         (labeling.queries, "tracks_frame")):
        real = getattr(module, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            counts[_name] += 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(module, name, counted)
    return counts


def test_a_rerun_with_no_write_reads_nothing_again_and_another_editors_write_shows(review, synthetic, calls):  # noqa: F811
    face = synthetic.faces["A"][0]
    before = _table(review, "review_members")
    _tick(review, "review_members", [face])  # a tick reruns the page
    no_exception(review)
    review.run()
    assert calls == {"faces_frame": 0, "suspect_faces": 0, "tracks_frame": 0}
    after = _table(review, "review_members")
    assert after.drop(columns="pick").equals(before.drop(columns="pick"))
    reject_faces(synthetic.store, [face], "bob")  # another editor, through the API
    review.run()
    no_exception(review)
    assert calls["faces_frame"] == 1 and calls["suspect_faces"] == 1 and calls["tracks_frame"] == 1
    members = _table(review, "review_members").set_index("id")
    assert face not in members.index or tuple(members.loc[face, ["status", "editor"]]) == ("rejected", "bob")


def test_faces_an_ingest_without_an_editor_adds_show_on_the_next_rerun(review, synthetic):  # noqa: F811
    review.toggle(key="review_tracks_photos").set_value(True).run()  # the synthetic store's faces are photos
    caption = next(c.value for c in review.caption if "tracks have no decision" in c.value)
    n = sum(len(f) for f in synthetic.faces.values())
    assert f"of {n} tracks" in caption, caption
    _add_faces(synthetic.store, [np.ones(8)], 1000)  # no audit event, as an ingest run without an editor
    review.run()
    no_exception(review)
    caption = next(c.value for c in review.caption if "tracks have no decision" in c.value)
    assert f"of {n + 1} tracks" in caption, caption
