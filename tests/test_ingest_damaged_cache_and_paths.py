"""Ingest fixes: cache entries damaged inside, a path overwritten with content stored
under another name, decided faces kept out of the detections, still photos' cache key, ".." after a
symbolic link, the failed row of a folder read since, and 16-bit greyscale PNG transparency."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from conftest import ingest_settings, unprivileged
from embeddings.cache import EmbeddingCache, sha256_file
from embeddings.media import sample_media
from embeddings.pipeline import IngestPipeline
from labeling.classes import add_class
from labeling.db import open_store
from labeling.face_labels import relabel_faces
from labeling.ingest import ingest
from labeling.schema import Face, FaceEmbedding, Media
from models.settings import Settings


def _photo(lfw_dir: Path, person: str, to: Path) -> Path:
    to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(sorted((lfw_dir / person).glob("*.jpg"))[0], to)
    return to


def _clip(path: Path) -> Path:
    """A small animated GIF of noise (three frames): its GIF embedding is a cache entry of its own."""
    rng = np.random.default_rng(9)
    frames = [Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for _ in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def _entry(settings: Settings, model_prefix: str, path: Path) -> Path:
    """The cache entry of a file's bytes in the namespace of a model (`dlib-resnet-v1`, `efficientnet`)."""
    sha = sha256_file(path)
    [entry] = (Path(settings.cache_dir)).glob(f"{model_prefix}*/{sha[:2]}/{sha}")
    return entry


def _crops(url: str, data_dir: Path) -> list[bool]:
    """Whether each stored face's crop is on disk."""
    with open_store(url)() as s:
        return [(data_dir / p).is_file() for p in s.scalars(select(FaceEmbedding.crop_path))]


# -- 1. a cache entry damaged inside is a miss, recomputed ------------------------------------------

def test_put_replaces_an_entry_missing_a_file_and_a_shape_tells_an_entry_damaged_inside(tmp_path):
    """An entry holding meta.json but not its arrays or a crop was handed back by `put` for what had just
    been computed; `EntryShape.complete` tells it from a complete one."""
    from embeddings.cache import EntryShape

    cache = EmbeddingCache(tmp_path)
    sha = "ab" * 32
    shape = EntryShape(("faces",), ("embedding",), lambda meta: [f"face_{i:03d}.jpg" for i in range(meta["faces"])])
    vec = np.ones((1, 4), np.float32)
    entry = cache.put("ns", sha, {"faces": 1}, {"embedding": vec}, {"face_000.jpg": b"jpeg"})
    assert shape.complete(entry.path, entry.meta, entry.arrays)
    (entry.path / "face_000.jpg").unlink()
    assert not shape.complete(entry.path, entry.meta, entry.arrays)
    again = cache.put("ns", sha, {"faces": 1}, {"embedding": vec}, {"face_000.jpg": b"jpeg"})
    assert (again.path / "face_000.jpg").read_bytes() == b"jpeg"
    (entry.path / "arrays.npz").unlink()
    damaged = cache.get("ns", sha)
    assert damaged.arrays == {} and not shape.complete(damaged.path, damaged.meta, damaged.arrays)
    assert not shape.complete(damaged.path, damaged.meta)  # the arrays file only looked for
    cache.put("ns", sha, {"faces": 1}, {"embedding": vec}, {"face_000.jpg": b"jpeg"})
    np.testing.assert_array_equal(cache.get("ns", sha).arrays["embedding"], vec)


@pytest.mark.slow
def test_an_entry_missing_its_arrays_or_a_crop_is_computed_again(tmp_path, lfw_dir, pipeline_models):
    """The auditor's cases: a GIF entry without arrays.npz crashed the next batch that read it (KeyError
    'embedding'), and a face entry without its crop was reported cached for ever, the store pointing at
    the missing crop, in the same store and in a new one."""
    folder = tmp_path / "in"
    photo = _photo(lfw_dir, "Tony_Blair", folder / "a.jpg")
    clip = _clip(folder / "noise.gif")
    settings = ingest_settings(tmp_path)
    pipeline = IngestPipeline(settings, **pipeline_models)
    url = settings.resolved_database_url
    assert ingest([folder], settings, pipeline=pipeline).line() == "ingested 2, cached 0, failed 0, faces 1"

    (_entry(settings, "dlib-resnet-v1", photo) / "face_000.jpg").unlink()
    assert _crops(url, settings.data_dir) == [False]
    again = ingest([folder], settings, pipeline=pipeline)  # the same store: the warm path looks for the crop
    assert (again.ingested, again.cached, again.failed) == (1, 1, 0)
    assert _crops(url, settings.data_dir) == [True]

    (_entry(settings, "efficientnet", clip) / "arrays.npz").unlink()
    (_entry(settings, "dlib-resnet-v1", photo) / "face_000.jpg").unlink()
    other = f"sqlite:///{tmp_path / 'other.db'}"
    fresh = ingest([folder], settings, pipeline=pipeline, store=open_store(other))  # every entry read
    assert (fresh.ingested, fresh.failed) == (2, 0)
    assert (_entry(settings, "efficientnet", clip) / "arrays.npz").is_file()
    assert _crops(other, settings.data_dir) == _crops(url, settings.data_dir) == [True]


# -- 2. a path overwritten with content stored under another name -----------------------------------

@pytest.mark.slow
def test_a_path_overwritten_with_content_stored_elsewhere_gets_the_other_content_note(tmp_path, lfw_dir,
                                                                                      pipeline_models):
    """cp b.jpg a.jpg: a.jpg's item still points at a.jpg, which now holds b.jpg's bytes. The note came only
    for a new row at the path; here a known row's bytes are met there (b.jpg's item keeps its name, b.jpg
    still being there, and records a.jpg as another of its names)."""
    folder = tmp_path / "in"
    a, b = _photo(lfw_dir, "Tony_Blair", folder / "a.jpg"), _photo(lfw_dir, "Colin_Powell", folder / "b.jpg")
    settings = ingest_settings(tmp_path)
    pipeline = IngestPipeline(settings, **pipeline_models)
    first = ingest([folder], settings, pipeline=pipeline)
    ids = {Path(m["path"]).name: m["id"] for m in first.media}
    shutil.copy(b, a)
    replaced = (f"{a}: the file now holds other content than when it was ingested as media {ids['a.jpg']}; "
                "they keep their faces, labels and tags, but their file is now this one")
    folder_run = ingest([folder], settings, pipeline=pipeline)
    assert folder_run.notes == [replaced, f"{a}: same content as {b} (media {ids['b.jpg']}); stored once"]
    alone = ingest([a], settings, pipeline=pipeline)  # its bytes' item kept at b.jpg, a.jpg known: no replace note
    assert alone.notes == [f"{a}: same content as {b} (media {ids['b.jpg']}); stored once"]


# -- 3. decided faces kept out of the detections -----------------------------------------------------

def _two_people(lfw_dir: Path, path: Path) -> Path:
    """A big face and a small one (37 px): min_face_size 80 finds only the big one."""
    picture = Image.new("RGB", (400, 250), (255, 255, 255))
    picture.paste(Image.open(lfw_dir / "Hugo_Chavez" / "Hugo_Chavez_0001.jpg").convert("RGB"), (0, 0))
    small = Image.open(lfw_dir / "Serena_Williams" / "Serena_Williams_0001.jpg").convert("RGB").resize((100, 100))
    picture.paste(small, (280, 20))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, quality=95)
    return path


def _face_rows(store) -> list[tuple]:
    with store() as s:
        return [tuple(r) for r in s.execute(select(Face.id, Face.face_index, Face.x1).order_by(Face.id))]


@pytest.mark.slow
def test_kept_decided_faces_are_no_change_on_later_runs_and_are_noted_once(tmp_path, lfw_dir, pipeline_models):
    """Both faces decided, then a detector setting that no longer finds the small one: it stays with its
    label (noted once, as a note). Later runs that store the item again (the same bytes under two names)
    counted it among the detections, reconciled every time and wrote an audit event for nothing."""
    photo = _two_people(lfw_dir, tmp_path / "in" / "two.jpg")
    copy = shutil.copy(photo, tmp_path / "in" / "two-copy.jpg")
    settings = ingest_settings(tmp_path)
    store = open_store(settings.resolved_database_url)
    first = ingest([photo], settings, pipeline=IngestPipeline(settings, **pipeline_models), store=store, editor="ann")
    assert first.faces == 2
    person, _ = add_class(store, "Kept Person", "ann")
    relabel_faces(store, [row[0] for row in _face_rows(store)], person, "ann")

    strict = Settings(data_dir=settings.data_dir, min_face_size=80)
    pipeline = IngestPipeline(strict, face=pipeline_models["face"], gif=pipeline_models["gif"])  # its own detector
    changed = ingest([photo, copy], strict, pipeline=pipeline, store=store, editor="ann")
    assert changed.faces == 1 and changed.event_id is not None
    assert [n for n in changed.notes if "not detected again" in n] == [
        f"{photo}: 1 face(s) an editor decided were not detected again; kept with their labels"]
    rows = _face_rows(store)
    assert len(rows) == 2
    for _ in range(2):
        again = ingest([photo, copy], strict, pipeline=pipeline, store=store, editor="ann")
        assert (again.cached, again.event_id) == (1, None)  # stored again (two names), nothing changed
        assert not [n for n in again.notes if "not detected again" in n]
        assert _face_rows(store) == rows


# -- 4. --frames does not key still photos ----------------------------------------------------------

@pytest.mark.slow
def test_frames_changes_nothing_for_cached_still_photos(tmp_path, lfw_dir, pipeline_models):
    """Cached photos re-ingested with another --frames were detected and embedded again (new namespaces),
    and going back wrote another audit event; a GIF is still sampled anew."""
    folder = tmp_path / "in"
    _photo(lfw_dir, "Tony_Blair", folder / "a.jpg")
    _photo(lfw_dir, "Colin_Powell", folder / "b.jpg")
    settings = ingest_settings(tmp_path)
    store = open_store(settings.resolved_database_url)
    run = ingest([folder], settings, pipeline=IngestPipeline(settings, **pipeline_models), store=store, editor="ann")
    assert run.ingested == 2
    namespaces = sorted(p.name for p in Path(settings.cache_dir).iterdir())
    for frames in (8, 16):
        other = Settings(data_dir=settings.data_dir, frames=frames)
        again = ingest([folder], other, pipeline=IngestPipeline(other, **pipeline_models), store=store, editor="ann")
        assert (again.ingested, again.cached, again.event_id) == (0, 2, None)
    assert sorted(p.name for p in Path(settings.cache_dir).iterdir()) == namespaces
    clip = _clip(folder / "noise.gif")
    pipeline = IngestPipeline(Settings(data_dir=settings.data_dir, frames=2), **pipeline_models)
    [photo, clip_result] = pipeline.run([folder / "a.jpg", clip])
    assert photo.from_cache and not clip_result.from_cache and clip_result.sampled_frames == [0, 2]


# -- 5. ".." after a symbolic link ---------------------------------------------------------------------

@pytest.mark.slow
def test_dot_dot_after_a_linked_folder_is_the_one_the_system_opens(tmp_path, monkeypatch, pipeline_models):
    """other/link -> ../real/sub: other/link/../photo.jpg is real/photo.jpg to the system (and to the CLI's
    check that it exists); ingest took other/photo.jpg, another file (or a failure when there is none)."""
    real, other = tmp_path / "real", tmp_path / "other"
    (real / "sub").mkdir(parents=True)
    other.mkdir()
    Image.new("RGB", (32, 32), "red").save(real / "photo.jpg")
    Image.new("RGB", (32, 32), "blue").save(other / "photo.jpg")
    (other / "link").symlink_to("../real/sub")
    monkeypatch.chdir(tmp_path)
    settings = ingest_settings(tmp_path)
    named = "other/link/../photo.jpg"
    summary = ingest([named], settings, pipeline=IngestPipeline(settings, **pipeline_models))
    stored = Path.cwd() / "real" / "photo.jpg"  # the working folder, as the system names it
    assert os.path.samefile(named, stored)
    assert [m["path"] for m in summary.media] == [str(stored)] and summary.failed == 0
    with open_store(settings.resolved_database_url)() as s:
        assert s.scalar(select(Media.sha256)) == sha256_file(stored)
    plain = ingest(["real/sub/../photo.jpg"], settings, pipeline=IngestPipeline(settings, **pipeline_models))
    assert [m["path"] for m in plain.media] == [str(stored)]  # ".." after a real folder: as before


# -- 6. the failed row of a folder that could be read since --------------------------------------------

@pytest.mark.slow
def test_a_folder_read_since_it_failed_drops_its_failed_row(shared_tmp, lfw_dir, pipeline_models):
    """A folder that could not be read is recorded as failed; once readable, its files were stored but
    the folder's failed row stayed for ever (counted and listed among the failures)."""
    folder, locked = shared_tmp / "in", shared_tmp / "in" / "locked"
    _photo(lfw_dir, "Tony_Blair", locked / "inner.jpg")
    settings = ingest_settings(shared_tmp)
    pipeline = IngestPipeline(settings, **pipeline_models)
    store = open_store(settings.resolved_database_url)
    for path in (settings.data_dir, *settings.data_dir.iterdir()):  # the store and cache, written by nobody
        path.chmod(0o777)
    locked.chmod(0)
    try:
        with unprivileged():
            failed = ingest([folder], settings, pipeline=pipeline, store=store, editor="ann")
    finally:
        locked.chmod(0o755)
    assert failed.failures and failed.failures[0][0] == str(locked) and "cannot be read" in failed.failures[0][1]
    [failed_id] = [m["id"] for m in failed.media]
    fixed = ingest([folder], settings, pipeline=pipeline, store=store, editor="ann")
    assert (fixed.ingested, fixed.failed) == (1, 0)
    assert fixed.removed == [{"id": failed_id, "path": str(locked)}] and fixed.event_id is not None
    with store() as s:
        assert [(m.path, m.status) for m in s.scalars(select(Media))] == [(str(locked / "inner.jpg"), "ok")]


# -- 7. 16-bit greyscale PNG transparency -------------------------------------------------------------

def test_a_16_bit_greyscale_png_transparency_is_composited_onto_white(tmp_path):
    """The tRNS grey value of a 16-bit greyscale PNG: its pixels were shown as that grey, not as white."""
    values = np.full((30, 40), 1000, np.uint16)
    values[:, 20:] = 30000
    Image.fromarray(values).save(tmp_path / "g16.png", transparency=1000)
    frame = sample_media(tmp_path / "g16.png").frames[0]
    assert (frame[:, :20] == 255).all()
    assert (frame[:, 20:] == round(30000 / 65535 * 255)).all()
