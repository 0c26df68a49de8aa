"""Ingest fixes: the data folder inside a walked folder, lost cache entries, failed
rows of restored files, under-estimated video frame counts, symlinked folders, face counts of the warm
path, face grouping at scale, animated PNG, and a GIF missing only its trailer byte."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from conftest import ingest_settings
from embeddings.media import MediaError, MediaLimits, decode_media, sample_media, scan_gif
from embeddings.pipeline import ANIMATED_KINDS, IngestPipeline, discover_media
from embeddings.tracks import _normalise, group_tracks
from labeling.db import open_store, session_scope
from labeling.face_labels import mark_unknown
from labeling.ingest import ingest
from labeling.schema import Face, FaceEmbedding, FaceLabel, Media
from models.registry import INFERENCE_CALLS
from models.settings import Settings
from test_ingest_robustness import write_timed_video

EDITOR = "round6"


def _run(paths, settings: Settings, models: dict, editor: str | None = None):
    return ingest(paths, settings, pipeline=IngestPipeline(settings, **models), editor=editor)


def _photo(lfw_dir: Path, person: str = "Tony_Blair", n: int = 1) -> Path:
    return sorted((lfw_dir / person).glob("*.jpg"))[n - 1]


def _media_paths(settings: Settings) -> list[str]:
    with session_scope(open_store(settings.resolved_database_url)) as s:
        return sorted(s.scalars(select(Media.path)))


def _face_count(settings: Settings) -> int:
    with session_scope(open_store(settings.resolved_database_url)) as s:
        return s.scalar(select(func.count()).select_from(Face))


# -- 1. the data folder inside a walked folder ------------------------------------------------------
@pytest.mark.slow
def test_a_folder_holding_the_data_folder_never_ingests_its_own_crops(tmp_path, lfw_dir, pipeline_models):
    """`cd photos && giflens ingest .` with the default data folder ./giflens-data: the cache's face
    crops (JPEGs) were ingested as media, a new crop each run, so faces grew 1, 2, 3."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(_photo(lfw_dir), folder / "a.jpg")
    settings = Settings(data_dir=folder / "giflens-data")
    runs = [_run([folder], settings, pipeline_models) for _ in range(3)]
    assert [r.faces for r in runs] == [1, 1, 1]
    assert [(r.ingested, r.cached) for r in runs] == [(1, 0), (0, 1), (0, 1)]
    assert _media_paths(settings) == [str(folder / "a.jpg")]
    assert any((settings.cache_dir).rglob("face_000.jpg")), "the crop is there, only never walked into"

    # Uploads are saved inside the data folder (labeling/pages/common.py): named themselves, or their
    # folder named itself, they still go in.
    upload = settings.data_dir / "uploads" / "0123" / "b.jpg"
    upload.parent.mkdir(parents=True)
    shutil.copy(_photo(lfw_dir, "Colin_Powell"), upload)
    assert _run([upload], settings, pipeline_models).ingested == 1
    other = settings.data_dir / "uploads" / "4567" / "c.jpg"
    other.parent.mkdir(parents=True)
    shutil.copy(_photo(lfw_dir, "Serena_Williams"), other)
    assert discover_media([settings.data_dir / "uploads"], skip=[settings.data_dir, settings.cache_dir]) == [upload, other]
    # the data folder named itself: its uploads are walked, its cache still not
    assert discover_media([settings.data_dir], skip=[settings.data_dir, settings.cache_dir]) == [upload, other]
    assert discover_media([folder], skip=[settings.data_dir, settings.cache_dir]) == [folder / "a.jpg"]


# -- 2. a lost cache entry of a stored item --------------------------------------------------------
@pytest.mark.slow
def test_a_lost_cache_is_recomputed_although_the_store_holds_the_items(tmp_path, lfw_dir, gifs_dir, pipeline_models,
                                                                      store_url):
    """README: "an entry damaged on disk is a miss, recomputed". With the store holding the item, the
    warm shortcut answered "cached" without looking, so the crops stayed missing for good."""
    folder = tmp_path / "media"
    folder.mkdir()
    shutil.copy(_photo(lfw_dir), folder / "blair.jpg")
    shutil.copy(gifs_dir / "jlaw-nods.gif", folder / "nods.gif")
    settings = ingest_settings(tmp_path, store_url)
    cold = _run([folder], settings, pipeline_models)
    assert (cold.ingested, cold.failed) == (2, 0) and cold.faces >= 2
    with session_scope(open_store(settings.resolved_database_url)) as s:
        faces = sorted(s.scalars(select(Face.id)))
        crops = list(s.scalars(select(FaceEmbedding.crop_path)))
    mark_unknown(open_store(settings.resolved_database_url), faces[:1], EDITOR)  # an editor's decision

    shutil.rmtree(settings.cache_dir)
    calls = sum(INFERENCE_CALLS.values())
    again = _run([folder], settings, pipeline_models)
    assert (again.ingested, again.cached, again.failed, again.faces) == (2, 0, 0, cold.faces)
    assert sum(INFERENCE_CALLS.values()) > calls, "the lost entries are computed again"
    assert all((settings.data_dir / crop).is_file() for crop in crops), "the crops the store points at are back"
    with session_scope(open_store(settings.resolved_database_url)) as s:
        assert sorted(s.scalars(select(Face.id))) == faces, "the face rows are the same rows"
        assert s.scalar(select(FaceLabel.status).where(FaceLabel.face_id == faces[0])) == "unknown"
    warm = _run([folder], settings, pipeline_models)
    assert (warm.ingested, warm.cached, warm.faces) == (0, 2, cold.faces)

    # only the GIF embedding's entry gone: recomputed too (the frames and faces come from the cache)
    gif_namespace = settings.cache_dir / IngestPipeline(settings, **pipeline_models)._gif_namespace()[0]
    entries = [p for p in gif_namespace.glob("*/*") if p.is_dir()]
    assert len(entries) == 1
    shutil.rmtree(gif_namespace)
    partly = _run([folder], settings, pipeline_models)
    assert (partly.ingested, partly.cached, partly.faces) == (1, 1, cold.faces)  # the GIF, the photo
    assert entries[0].is_dir()


# -- 3. a failed row of a file restored to bytes already stored ----------------------------------------
@pytest.mark.slow
def test_a_restored_file_drops_its_failed_row_on_the_warm_path(tmp_path, lfw_dir, pipeline_models, store_url):
    """ok, then damaged in place (a failed row of the damaged bytes), then restored: the restored bytes
    are stored as they are, so nothing was written and the failed row stayed listed forever."""
    photo = tmp_path / "blair.jpg"
    good = _photo(lfw_dir).read_bytes()
    photo.write_bytes(good)
    settings = ingest_settings(tmp_path, store_url)
    assert _run([photo], settings, pipeline_models, EDITOR).ingested == 1
    photo.write_bytes(good[: len(good) // 2])
    damaged = _run([photo], settings, pipeline_models, EDITOR)
    assert damaged.failed == 1
    with session_scope(open_store(settings.resolved_database_url)) as s:
        failed_id = s.scalar(select(Media.id).where(Media.status == "failed"))
    photo.write_bytes(good)
    restored = _run([photo], settings, pipeline_models, EDITOR)
    assert (restored.ingested, restored.cached, restored.failed) == (0, 1, 0)
    assert restored.removed == [{"id": failed_id, "path": str(photo)}]
    assert restored.event_id is not None, "the removal is audited, as on the write path"
    with session_scope(open_store(settings.resolved_database_url)) as s:
        assert list(s.scalars(select(Media.status))) == ["ok"]
    quiet = _run([photo], settings, pipeline_models, EDITOR)
    assert (quiet.cached, quiet.removed, quiet.event_id) == (1, [], None), "a warm re-run writes nothing"


# -- 4. a video whose frame count is estimated too low -----------------------------------------------
def _colour(i: int) -> np.ndarray:
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:] = (i * 37 % 256, i * 91 % 256, (i * 5) % 256)
    return frame


def _slow_then_fast_mkv(path: Path, codec: str = "mpeg4") -> Path:
    """Declared 1 fps: 20 frames a second apart, then 200 frames 40 ms apart (a screen recorder after
    a still start). MKV states no frame count: duration x rate estimates 29 frames for 220."""
    return write_timed_video(path, codec, 1, [_colour(i) for i in range(220)], [1000] * 20 + [40] * 200)


def test_a_video_holding_more_frames_than_estimated_is_sampled_to_its_end(tmp_path):
    decoded = decode_media(_slow_then_fast_mkv(tmp_path / "rate1.mkv"), 8)
    assert decoded.total == 220
    assert decoded.indices == [13, 41, 68, 96, 123, 151, 178, 206]  # was [1, 5, 9, ...] up to 27: the start only
    for index, frame in zip(decoded.indices, decoded.frames):
        assert np.abs(frame.astype(int) - _colour(index)).mean() < 8, f"frame {index} is the frame it says"


def test_an_under_estimated_video_still_counts_against_the_frame_limit(tmp_path):
    with pytest.raises(MediaError) as refused:
        decode_media(_slow_then_fast_mkv(tmp_path / "rate1.mkv"), 8, MediaLimits(max_frames=100))
    assert refused.value.reason == "too_many_frames" and "more than 100 frames" in str(refused.value)


# -- 5. symlinked folders --------------------------------------------------------------------------
def _jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "red").save(path)
    return path


def test_symlinked_folders_are_walked_once_and_never_into_the_data_folder(tmp_path):
    """The Ingest page's folder browser lists a linked folder with its media; the walk skipped it."""
    shoot = tmp_path / "elsewhere" / "2024-shoot"
    inside = _jpeg(shoot / "x.jpg")
    folder = tmp_path / "library"
    own = _jpeg(folder / "a.jpg")
    (folder / "shoot").symlink_to(shoot)
    (folder / "again").symlink_to(shoot)  # the same folder twice: walked once
    (folder / "up").symlink_to(folder)  # a loop back to the root
    (shoot / "back").symlink_to(tmp_path / "elsewhere")  # a loop from inside the linked folder
    data = tmp_path / "data"
    _jpeg(data / "cache" / "ns" / "ab" / "abcd" / "face_000.jpg")
    (folder / "data-link").symlink_to(data)  # the data folder reached through a link is still skipped
    assert discover_media([folder]) == [own, folder / "again" / "x.jpg", folder / "data-link/cache/ns/ab/abcd/face_000.jpg"]
    found = discover_media([folder], skip=[data, data / "cache"])
    assert found == [own, folder / "again" / "x.jpg"]  # sorted names: "again" before "shoot"
    assert [p.resolve() for p in found] == [own, inside]


# -- 6. the warm path's face count -----------------------------------------------------------------
@pytest.mark.slow
def test_the_warm_path_counts_the_faces_detected_as_the_store_path_does(tmp_path, lfw_dir, pipeline_models):
    """A face an editor decided stays when a re-ingest no longer detects it (fewer frames sampled).
    The run that stores that counts the faces it detects; the warm re-run counted every stored row."""
    photos = [Image.open(_photo(lfw_dir, person, n)).convert("RGB") for n in (1, 2, 3, 4)
              for person in ("Tony_Blair", "Colin_Powell")]
    gif = tmp_path / "blair-powell.gif"
    photos[0].save(gif, save_all=True, append_images=photos[1:], duration=100, loop=0)
    settings = ingest_settings(tmp_path)
    assert _run([gif], settings, pipeline_models).faces == 8
    with session_scope(open_store(settings.resolved_database_url)) as s:
        decided = s.scalar(select(Face.id).where(Face.frame_index == 1))
    mark_unknown(open_store(settings.resolved_database_url), [decided], EDITOR)
    one_frame = Settings(data_dir=settings.data_dir, frames=1)  # samples frame 4 only
    stored = _run([gif], one_frame, pipeline_models)
    warm = _run([gif], one_frame, pipeline_models)
    assert (stored.ingested, stored.faces) == (1, 1)
    assert (warm.cached, warm.faces) == (1, stored.faces)  # was 2: the decided face of frame 1 counted too
    assert _face_count(settings) == 2, "the decided face is kept"


# -- 7. grouping many faces into tracks ----------------------------------------------------------------
def _reference_group_tracks(frame_of_face, embeddings, max_distance):
    """The grouping as it was before vectorising (a Python pair loop per merge): the reference."""
    n = len(frame_of_face)
    emb = np.asarray(embeddings, dtype=np.float32)
    clusters = [[i] for i in range(n)]
    frames = [{int(frame_of_face[i])} for i in range(n)]
    sums = [emb[i].astype(np.float64) for i in range(n)]
    while len(clusters) > 1:
        means = np.stack([_normalise(s) for s in sums])
        dist = 1.0 - means @ means.T
        np.fill_diagonal(dist, np.inf)
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                if frames[a] & frames[b]:
                    dist[a, b] = dist[b, a] = np.inf
        a, b = np.unravel_index(int(np.argmin(dist)), dist.shape)
        if not dist[a, b] < max_distance:
            break
        a, b = (int(a), int(b)) if a < b else (int(b), int(a))
        clusters[a] += clusters.pop(b)
        frames[a] |= frames.pop(b)
        sums[a] = sums[a] + sums.pop(b)
    order = sorted(range(len(clusters)), key=lambda c: min(int(frame_of_face[i]) for i in clusters[c]))
    out = []
    for c in order:
        members = tuple(sorted(clusters[c], key=lambda i: (int(frame_of_face[i]), i)))
        vector = _normalise(sums[c]).astype(np.float32)
        out.append((members, max(members, key=lambda i: float(emb[i] @ vector)), vector))
    return out


def _random_clip(rng: np.random.Generator, n_frames: int, per_frame: int, people: int, noise: float):
    centres = rng.normal(size=(people, 128))
    frame_of_face, vectors = [], []
    for f in range(n_frames):
        for person in rng.choice(people, size=min(int(rng.integers(0, per_frame + 1)), people), replace=False):
            v = centres[person] / np.linalg.norm(centres[person]) + rng.normal(scale=noise, size=128)
            frame_of_face.append(f)
            vectors.append(v / np.linalg.norm(v))
    return frame_of_face, np.asarray(vectors, np.float32).reshape(-1, 128)


def test_track_grouping_matches_the_pair_loop_it_replaces():
    rng = np.random.default_rng(6)
    for _ in range(60):
        clip = _random_clip(rng, int(rng.integers(1, 30)), int(rng.integers(1, 4)), int(rng.integers(1, 5)),
                            float(rng.choice([0.02, 0.05, 0.1, 0.3])))
        for max_distance in (0.05, 0.075, 0.3, 0.5):
            got = [(t.members, t.representative, t.vector) for t in group_tracks(*clip, max_distance)]
            want = _reference_group_tracks(*clip, max_distance)
            assert [g[:2] for g in got] == [w[:2] for w in want]
            assert all(np.allclose(g[2], w[2], atol=1e-6) for g, w in zip(got, want))


def test_a_long_clip_of_two_alternating_people_gives_two_tracks():
    """512 frames of two faces each: 57 s in the pair loop, a second or two now (not timed here)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 128))
    frame_of_face = [i // 2 for i in range(1024)]
    vectors = np.asarray([centres[i % 2] + rng.normal(scale=0.01, size=128) for i in range(1024)], np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tracks = group_tracks(frame_of_face, vectors, 0.075)
    assert [t.members for t in tracks] == [tuple(range(0, 1024, 2)), tuple(range(1, 1024, 2))]


# -- 8. animated PNG ---------------------------------------------------------------------------------
def _noise(n: int, size=(40, 30)) -> list[Image.Image]:
    rng = np.random.default_rng(8)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def test_an_animated_png_is_sampled_like_an_animation(tmp_path):
    from embeddings.media import scan_apng  # new with the fix: imported here so the other tests run without it

    frames = _noise(6)
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:], duration=100, loop=0)
    m = sample_media(tmp_path / "anim.png", 16, dedupe_distance=-1)  # was one still of the default image
    assert (m.kind, m.total_frames, m.frame_indices) == ("apng", 6, list(range(6)))
    assert m.duration_s == pytest.approx(0.6)
    assert all(np.array_equal(got, np.asarray(want)) for got, want in zip(m.frames, frames))
    assert "apng" in ANIMATED_KINDS  # so the pipeline gives it a GIF embedding

    # a default image that is no animation frame (what viewers without APNG show) is left out
    frames[0].save(tmp_path / "fallback.png", save_all=True, append_images=frames[1:], default_image=True,
                   duration=[100] * 6)
    m = sample_media(tmp_path / "fallback.png", 16, dedupe_distance=-1)
    assert (m.kind, m.total_frames) == ("apng", 5)
    assert all(np.array_equal(got, np.asarray(want)) for got, want in zip(m.frames, frames[1:]))

    data = (tmp_path / "anim.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) - 200])  # inside the last frame's data
    with pytest.raises(MediaError) as refused:
        decode_media(tmp_path / "cut.png")
    assert refused.value.reason == "truncated"
    assert scan_apng(tmp_path / "anim.png").frames == 6


@pytest.mark.slow
def test_an_animated_png_gets_a_gif_embedding(tmp_path, lfw_dir, pipeline_models):
    photos = [Image.open(_photo(lfw_dir, "Colin_Powell", n)).convert("RGB") for n in (1, 2, 3)]
    photos[0].save(tmp_path / "powell.png", save_all=True, append_images=photos[1:], duration=200, loop=0)
    result = next(IngestPipeline(ingest_settings(tmp_path), **pipeline_models).run([tmp_path / "powell.png"]))
    assert result.status == "ok", result.error
    assert (result.kind, result.total_frames) == ("apng", 3)
    assert result.gif_embedding is not None and result.gif_embedding.shape == (1280,)
    assert len(result.faces) >= 3 and {f.frame_index for f in result.faces} == {0, 1, 2}


# -- 9. a GIF missing only its trailer byte ---------------------------------------------------------
def test_a_gif_missing_only_its_trailer_is_used_and_a_cut_frame_still_refused(tmp_path):
    frames = _noise(10)
    frames[0].save(tmp_path / "full.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    data = (tmp_path / "full.gif").read_bytes()
    assert data.endswith(b";")
    (tmp_path / "no-trailer.gif").write_bytes(data[:-1])
    full, cut = decode_media(tmp_path / "full.gif"), decode_media(tmp_path / "no-trailer.gif")
    assert (cut.total, cut.indices) == (full.total, full.indices) == (10, list(range(10)))
    assert all(np.array_equal(a, b) for a, b in zip(full.frames, cut.frames))
    assert scan_gif(tmp_path / "no-trailer.gif", MediaLimits()).duration_s == 1.0
    for keep in (len(data) - 2, len(data) - 40, len(data) // 2):  # inside the last frame, inside another
        (tmp_path / "cut.gif").write_bytes(data[:keep])
        with pytest.raises(MediaError) as refused:
            decode_media(tmp_path / "cut.gif")
        assert refused.value.reason == "truncated"
