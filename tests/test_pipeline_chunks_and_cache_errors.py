"""Pipeline fixes: a chunk's frames go through the networks once they reach a pixel
budget, a cache folder that cannot be created is `CacheUnavailableError`, the same bytes under two
names are noted, and an interrupted
ingest carries its summary so far."""
from __future__ import annotations

import shutil

import pytest
from PIL import Image

from conftest import ingest_settings, unprivileged
from embeddings.pipeline import CacheUnavailableError, IngestPipeline
from labeling.ingest import ingest
from models.registry import INFERENCE_CALLS
from test_ingest_robustness import _events, _photo, _rows

PEOPLE = ["Tony_Blair", "Colin_Powell", "George_W_Bush", "Serena_Williams"]


# -- 3. a chunk's pending frames are bounded ----------------------------------------------------------
@pytest.mark.slow
def test_a_chunk_runs_inference_once_its_frames_reach_the_pixel_budget(tmp_path, lfw_dir, pipeline_models):
    """Four 250x250 photos (62,500 px each) in one chunk: held all together, one MTCNN batch; with a
    budget of 100,000 px, inference runs after every second photo, and finds the same faces."""
    photos = [_photo(lfw_dir, person, tmp_path / f"{person}.jpg") for person in PEOPLE]

    def detect(name: str, **budget: int) -> tuple[int, list[int]]:
        settings = ingest_settings(tmp_path / name)
        pipeline = IngestPipeline(settings, **budget, **pipeline_models)
        before = INFERENCE_CALLS["mtcnn"]
        results = list(pipeline.run(photos))
        assert all(r.status == "ok" and not r.from_cache for r in results)
        return INFERENCE_CALLS["mtcnn"] - before, [r.face_count for r in results]

    whole_calls, whole_faces = detect("whole")
    budget_calls, budget_faces = detect("budget", max_pending_pixels=100_000)
    assert (whole_calls, budget_calls) == (1, 2)
    assert budget_faces == whole_faces and sum(whole_faces) >= 4


# -- 4. a cache folder that cannot be created ---------------------------------------------------------
def test_a_plain_file_named_cache_is_cache_unavailable(tmp_path):
    settings = ingest_settings(tmp_path)
    settings.data_dir.mkdir()
    settings.cache_dir.write_text("not a folder")
    with pytest.raises(CacheUnavailableError) as refused:
        IngestPipeline(settings)
    assert str(refused.value) == (f"the embedding cache at {settings.cache_dir} cannot be used "
                                  "(File exists: a file is where a folder is needed)")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (200, 100, 50)).save(photo)
    with pytest.raises(CacheUnavailableError, match="cannot be used"):  # ingest creates its pipeline
        ingest([photo], settings)


def test_a_data_folder_that_cannot_be_created_is_cache_unavailable(shared_tmp):
    locked = shared_tmp / "locked"
    locked.mkdir(mode=0o555)
    settings = ingest_settings(locked)
    with unprivileged(), pytest.raises(CacheUnavailableError) as refused:
        IngestPipeline(settings)
    assert str(refused.value) == f"the embedding cache at {settings.cache_dir} cannot be used (Permission denied)"
    assert isinstance(refused.value, OSError) and refused.value.errno is not None


# -- 5. the same bytes under two names ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("chunk_size", [8, 1])
def test_a_copy_in_a_cold_batch_is_noted(tmp_path, lfw_dir, pipeline_models, chunk_size):
    """a/x.jpg and b/y.jpg hold the same bytes, a/z.jpg another photo: one row, kept at the first name it
    was ingested from (x), in one chunk or in two; y is named by a note (one item: one set of labels and tags)."""
    (tmp_path / "in" / "a").mkdir(parents=True)
    (tmp_path / "in" / "b").mkdir()
    x = _photo(lfw_dir, "Tony_Blair", tmp_path / "in" / "a" / "x.jpg")
    _photo(lfw_dir, "Colin_Powell", tmp_path / "in" / "a" / "z.jpg")
    y = tmp_path / "in" / "b" / "y.jpg"
    shutil.copy(x, y)
    settings = ingest_settings(tmp_path)
    pipeline = IngestPipeline(settings, chunk_size=chunk_size, **pipeline_models)
    summary = ingest([tmp_path / "in"], settings, pipeline=pipeline)
    rows = _rows(settings.resolved_database_url)
    [x_id] = [m for m, _, path in rows if path == str(x)]
    assert (summary.ingested, summary.cached, summary.failed, summary.copies, len(rows)) == (2, 0, 0, 1, 2)
    assert summary.notes == [f"{y}: same content as {x} (media {x_id}); stored once"]
    again = ingest([tmp_path / "in"], settings, pipeline=pipeline)  # said on every run while both are there
    assert (again.ingested, again.cached, again.notes) == (0, 2, summary.notes)


@pytest.mark.slow
def test_a_copy_ingested_later_is_noted_but_a_move_is_not(tmp_path, lfw_dir, pipeline_models):
    original = _photo(lfw_dir, "Tony_Blair", tmp_path / "original.jpg")
    settings = ingest_settings(tmp_path)
    pipeline = IngestPipeline(settings, **pipeline_models)
    assert ingest([original], settings, pipeline=pipeline).notes == []
    [(media_id, _, _)] = _rows(settings.resolved_database_url)
    moved = tmp_path / "moved.jpg"
    original.rename(moved)
    assert ingest([moved], settings, pipeline=pipeline).notes == []  # a move: nothing holds the old name
    copy = tmp_path / "copy.jpg"
    shutil.copy(moved, copy)
    copied = ingest([copy], settings, pipeline=pipeline)  # moved.jpg is still there: the row keeps its name
    assert copied.notes == [f"{copy}: same content as {moved} (media {media_id}); stored once"]
    assert [(m, path) for m, _, path in _rows(settings.resolved_database_url)] == [(media_id, str(moved))]


# -- 7. an interrupted ingest carries its summary -----------------------------------------------------
@pytest.mark.slow
def test_an_interrupted_ingest_carries_its_summary_so_far(tmp_path, lfw_dir, pipeline_models):
    """Ctrl-C after the second file (a damaged one, then a photo): the exception holds the summary the
    CLI prints, failures included, and the audit event is written as before."""
    bad = tmp_path / "a-bad.gif"
    bad.write_bytes(b"GIF89a not really")
    photo = _photo(lfw_dir, "Tony_Blair", tmp_path / "b-photo.jpg")
    later = _photo(lfw_dir, "Colin_Powell", tmp_path / "c-later.jpg")
    settings = ingest_settings(tmp_path)
    seen = []

    def stop(result) -> None:
        seen.append(result)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as stopped:
        ingest([bad, photo, later], settings, on_result=stop, pipeline=IngestPipeline(settings, **pipeline_models),
               editor="ann")
    summary = stopped.value.summary
    assert summary.line() == f"ingested 1, cached 0, failed 1, faces {seen[1].face_count}"
    assert [path for path, _ in summary.failures] == [str(bad)]
    [event] = _events(settings.resolved_database_url)
    assert event.after["interrupted"] and summary.event_id == event.id


# -- video decoding changed (display aspect, WebM alpha): videos alone get new frames keys ------------
def test_only_videos_get_a_frames_key_of_their_own(tmp_path):
    import numpy as np

    from embeddings.media import animation_decoder as decoder_of
    from test_ingest_robustness import write_timed_video

    frames = [np.full((48, 64, 3), v, np.uint8) for v in (0, 120, 240)]
    video = write_timed_video(tmp_path / "clip.mp4", "libx264", 25, frames, [40, 40])
    webm = write_timed_video(tmp_path / "clip.webm", "libvpx-vp9", 25, frames, [40, 40])
    still = tmp_path / "still.png"
    Image.new("RGB", (8, 8)).save(still)
    named_like_a_video = tmp_path / "photo.mp4"
    Image.new("RGB", (8, 8)).save(named_like_a_video, format="JPEG")
    assert [decoder_of(p) for p in (video, webm, still, named_like_a_video)] == ["video", "video", None, None]
    pipeline = IngestPipeline(ingest_settings(tmp_path))
    keys = {d: pipeline._namespaces(d) for d in (None, "apng", "video")}
    assert keys[None].frames == pipeline.frames_namespace  # photos and GIFs keep their cache entries
    assert len({k.frames for k in keys.values()}) == len({k.source_key for k in keys.values()}) == 3


@pytest.mark.slow
def test_faces_of_shrunk_frames_are_stored_in_the_media_coordinates(tmp_path, lfw_dir, pipeline_models):
    """A 2-frame GIF on a 2400x2400 canvas whose frames are shrunk to the retained-pixel budget: its
    faces' boxes and landmarks are where they are on the canvas, as without the budget."""
    import dataclasses

    import numpy as np

    from embeddings.media import RETAIN_MIN_FRAME_PIXELS

    people = [Image.open(next((lfw_dir / p).glob("*.jpg"))).convert("RGB").resize((2400, 2400)) for p in PEOPLE[:2]]
    gif = tmp_path / "big.gif"
    people[0].save(gif, save_all=True, append_images=people[1:], duration=200, loop=0)

    def faces(name: str, budget: int | None):
        pipeline = IngestPipeline(ingest_settings(tmp_path / name), **pipeline_models)
        if budget:
            pipeline.limits = dataclasses.replace(pipeline.limits, max_retained_pixels=budget)
        (result,) = pipeline.run([gif])
        assert result.status == "ok", result.error
        return result

    whole, shrunk = faces("whole", None), faces("shrunk", 2 * RETAIN_MIN_FRAME_PIXELS)
    assert (shrunk.width, shrunk.height) == (2400, 2400) and len(shrunk.faces) == len(whole.faces) >= 2
    for a, b in zip(whole.faces, shrunk.faces):
        assert np.allclose(a.box, b.box, atol=24)  # 1% of the canvas
        assert np.allclose(a.landmarks, b.landmarks, atol=24)
