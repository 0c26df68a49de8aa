"""The store's first tables on SQLite and PostgreSQL: migrations, constraints, round trips."""
from __future__ import annotations

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from labeling.db import current_revision, make_engine, migrate, normalise_url, open_store, session_scope
from labeling.db import HEAD
from labeling.schema import Base, Face, FaceEmbedding, Media, MediaEmbedding, Track, bytes_to_vector, vector_to_bytes


def test_migrations_match_the_models_and_are_idempotent(store_url):
    engine = make_engine(store_url)
    migrate(engine)
    migrate(engine)
    assert current_revision(engine) == HEAD
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    engine.dispose()


def _media(session, sha="a" * 64, **kw):
    media = Media(sha256=sha, path=f"/x/{sha[:4]}.gif", kind="gif", status="ok", **kw)
    session.add(media)
    session.flush()
    return media


def test_round_trip_and_cascade(store_url):
    store = open_store(store_url)
    vec = np.random.default_rng(0).normal(size=128).astype(np.float32)
    with session_scope(store) as s:
        media = _media(s, frame_hashes=["00ff00ff00ff00ff"], sampled_frames=[0, 5])
        face = Face(media_id=media.id, face_index=0, frame_index=5, x1=1, y1=2, x2=30, y2=40, probability=0.99,
                    landmarks=[[1.0, 2.0]] * 5)
        s.add(face)
        s.flush()
        track = Track(media_id=media.id, model_id="m", track_index=0, n_faces=1, representative_face_id=face.id,
                      vector=vector_to_bytes(vec))
        s.add(track)
        s.flush()
        s.add(FaceEmbedding(face_id=face.id, model_id="m", dim=128, vector=vector_to_bytes(vec), track_id=track.id))
        s.add(MediaEmbedding(media_id=media.id, model_id="g", dim=128, vector=vector_to_bytes(vec),
                             top_labels=[["espresso", 0.8]]))
    with session_scope(store) as s:
        row = s.scalar(select(FaceEmbedding))
        np.testing.assert_array_equal(bytes_to_vector(row.vector, 128), vec)
        media = s.scalar(select(Media))
        assert media.frame_hashes == ["00ff00ff00ff00ff"] and media.sampled_frames == [0, 5]
        s.delete(media)
    with session_scope(store) as s:
        for table in (Face, FaceEmbedding, Track, MediaEmbedding):
            assert s.scalar(select(func.count()).select_from(table)) == 0


def test_same_content_hash_is_refused(store_url):
    store = open_store(store_url)
    with session_scope(store) as s:
        _media(s)
    with pytest.raises(IntegrityError):
        with session_scope(store) as s:
            _media(s)
    with session_scope(store) as s:
        assert s.scalar(select(func.count()).select_from(Media)) == 1


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'deep' / 'store.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_postgres_urls_use_psycopg():
    assert normalise_url("postgresql://u@h/db").startswith("postgresql+psycopg://")
    assert normalise_url("postgres://u@h/db").startswith("postgresql+psycopg://")
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_vector_length_is_checked():
    with pytest.raises(ValueError, match="expected 512"):
        bytes_to_vector(vector_to_bytes(np.zeros(128)), 512)


def test_migration_0005_recomputes_class_name_keys_without_merging(store_url):
    """Keys written before 0005 kept runs of spaces; the upgrade recomputes them, and leaves the old
    key where the new one is taken (two classes an editor must merge, never one silently dropped)."""
    from alembic import command
    from sqlalchemy import text

    from labeling.db import alembic_config, make_engine, migrate, normalise_url

    engine = make_engine(normalise_url(store_url))
    config = alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0004")
        for name, key in (("Brad  Pitt", "brad  pitt"), ("Dua   Lipa", "dua   lipa"), ("dua lipa", "dua lipa")):
            conn.execute(text("INSERT INTO celebrity_class (name, name_key, status, created_at, updated_at, version) "
                              "VALUES (:n, :k, 'active', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1)"), {"n": name, "k": key})
    migrate(engine)
    with engine.connect() as conn:
        keys = dict(conn.execute(text("SELECT name, name_key FROM celebrity_class")).all())
    assert keys == {"Brad  Pitt": "brad pitt", "Dua   Lipa": "dua   lipa", "dua lipa": "dua lipa"}


def test_migration_0006_keeps_tags_and_refuses_an_unknown_tag_source(store_url):
    """0006 adds the media_tag.source check (SQLite: batch copy of the table): rows written before
    survive, an unknown source is refused by the database itself, and the downgrade works."""
    from alembic import command

    from labeling.db import alembic_config

    engine = make_engine(normalise_url(store_url))
    config = alembic_config(engine)
    insert = text("INSERT INTO media_tag (media_id, tag_id, confidence, source, status, updated_at, version) "
                  "VALUES (:m, :t, 0.5, :source, 'active', CURRENT_TIMESTAMP, 1)")
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0005")
        media = conn.execute(text("INSERT INTO media (sha256, path, kind, status, created_at, updated_at, version) "
                                  "VALUES (:s, '/x/a.gif', 'gif', 'ok', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1) "
                                  "RETURNING id"),
                             {"s": "b" * 64}).scalar()
        tags = [conn.execute(text("INSERT INTO tag (name, created_at) VALUES (:n, CURRENT_TIMESTAMP) RETURNING id"),
                             {"n": n}).scalar() for n in ("nod", "wink")]
        conn.execute(insert, {"m": media, "t": tags[0], "source": "uploader"})
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT source, confidence FROM media_tag")).all() == [("uploader", 0.5)]
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(insert, {"m": media, "t": tags[1], "source": "scraper"})
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0005")
        conn.execute(insert, {"m": media, "t": tags[1], "source": "scraper"})  # no check before 0006
        conn.execute(text("DELETE FROM media_tag WHERE source = 'scraper'"))
    migrate(engine)
    assert current_revision(engine) == HEAD
    engine.dispose()


def test_the_audit_log_is_append_only_in_the_database(store_url):
    """Whoever connects, an audit event cannot be edited or deleted, nor its entities; the one change
    allowed is what undo does: mark an event undone, once."""
    from sqlalchemy.exc import DBAPIError

    from labeling.audit import undo_event
    from labeling.classes import add_class

    store = open_store(store_url)
    _, result = add_class(store, "Audit Person", "ann")
    engine = store.kw["bind"]
    for statement in ("UPDATE audit_event SET summary = 'nothing happened'",
                      "UPDATE audit_event SET editor = 'mallory'",
                      "DELETE FROM audit_event",
                      "UPDATE audit_entity SET key = 'class:999'",
                      "DELETE FROM audit_entity"):
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text(statement))
    undone = undo_event(store, result.event_id, "bob")
    with engine.connect() as conn:
        events = conn.execute(text("SELECT id, editor, undone_by_id FROM audit_event ORDER BY id")).all()
    assert events == [(result.event_id, "ann", undone.event_id), (undone.event_id, "bob", None)]
    with pytest.raises(DBAPIError, match="append-only"):  # undone once: the mark cannot move
        with engine.begin() as conn:
            conn.execute(text("UPDATE audit_event SET undone_by_id = NULL"))


def test_migration_0008_keeps_class_ids_and_references_and_never_reuses_an_id(store_url):
    """0008 (SQLite: a batch copy of celebrity_class, which face labels point at) keeps every id
    and reference, and the next class is numbered above every id the audit log ever named, so a
    class deleted by an undo before the upgrade does not lend its id either."""
    from alembic import command

    from labeling.audit import history, undo_last
    from labeling.classes import add_class
    from labeling.db import alembic_config
    from labeling.face_labels import relabel_faces

    engine = make_engine(normalise_url(store_url))
    config = alembic_config(engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0007")
        media = conn.execute(text("INSERT INTO media (sha256, path, kind, status, created_at, updated_at, version) "
                                  "VALUES (:s, '/x/a.gif', 'gif', 'ok', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1) "
                                  "RETURNING id"), {"s": "c" * 64}).scalar()
        face = conn.execute(text("INSERT INTO face (media_id, face_index, frame_index, x1, y1, x2, y2, probability, landmarks) "
                                 "VALUES (:m, 0, 0, 0, 0, 10, 10, 0.99, '[]') RETURNING id"), {"m": media}).scalar()
    store = open_store(store_url)  # migrates to head; the steps below then run on the old layout
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0007")
    ann, _ = add_class(store, "Ann Person", "ann")
    relabel_faces(store, [face], ann, "ann")
    add_class(store, "Gone Person", "ann")
    undo_last(store, "ann")
    migrate(engine)
    assert current_revision(engine) == HEAD
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, name FROM celebrity_class")).all() == [(ann, "Ann Person")]
        assert conn.execute(text("SELECT face_id, class_id FROM face_label")).all() == [(face, ann)]
    new, _ = add_class(store, "New Person", "ann")
    assert new == ann + 2
    assert [h.operation for h in history(store, f"class:{new}")] == ["add_class"]
    engine.dispose()
