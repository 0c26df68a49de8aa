"""The bias audit's inputs read from the store, one way for the app's page and `giflens audit`.

Why here and not in explorer.bias_audit: that module is pure (DataFrames in, a report out); this
one is the edge that reads the store and the embeddings.
"""
from __future__ import annotations

import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from explorer.bias_audit import confirmed_class_stats, held_out_grades, store_inputs
from labeling.queries import classes_frame, faces_frame


def read_audit_inputs(store: sessionmaker[Session]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """(faces, classes, cluster stats) for `audit_report`. Purity is measured on editor-confirmed
    labels only, in the embedding space of the store's main face model: predicted labels would
    grade the model with its own answers (None when too few confirmed faces have a vector).
    Accuracy and unknown rate grade each confirmed face with its media item held out of its class:
    the stored prediction was made with that face in the training set."""
    faces, classes = store_inputs(faces_frame(store), classes_frame(store))
    with_vectors, vectors = faces_frame(store, with_vectors=True)
    stats = confirmed_class_stats(faces, with_vectors["face_id"], vectors) if len(with_vectors) else None
    faces = held_out_grades(faces, with_vectors["face_id"], with_vectors["media_id"], vectors)
    return faces, classes, stats
