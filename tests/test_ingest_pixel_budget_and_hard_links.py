"""Ingest fixes: the retained-pixel budget holds for any sampling, the faces of a
video re-decoded at another display size are found again, and a hard link is no copy, wherever it is met."""
from __future__ import annotations

import os

import pytest
from PIL import Image
from sqlalchemy import select

from conftest import ingest_settings
from embeddings.media import RETAIN_FLOOR_PIXELS, MediaLimits, retained_frame_pixels, sample_media
from embeddings.pipeline import IngestPipeline
from labeling.classes import add_class
from labeling.db import open_store, session_scope
from labeling.face_labels import relabel_faces
from labeling.ingest import _find_media, _stored_frame, ingest, store_result
from labeling.schema import Face, FaceLabel, Media
from models.settings import Settings
from conftest import encoder
from test_decoding_anamorphic_and_alpha import _block_frames, _write_video
from test_ingest_robustness import _photo


# -- 1. the retained-pixel budget is a bound -----------------------------------------------------------

def test_the_retained_pixel_budget_holds_for_every_sampling_the_settings_allow():
    """--frames up to 512: the kept frames of one file together stay within its budget (before, above 64
    frames every frame kept full HD: 512 of them 1.06 Gpx, 3.2 GB), and a frame is never shrunk below
    640x360, nor a full-HD frame at the default 16."""
    limits = MediaLimits()
    most = next(rule.le for rule in Settings.model_fields["frames"].metadata if hasattr(rule, "le"))
    assert most == 512
    for sampled in range(1, most + 1):
        cap = retained_frame_pixels(sampled, limits)
        assert sampled * cap <= limits.max_retained_pixels and cap >= RETAIN_FLOOR_PIXELS
    assert retained_frame_pixels(16, limits) >= 3840 * 2160


@pytest.mark.parametrize("budget, shrunk_to", [(6 * 400_000, 400_000), (6 * 1_000, RETAIN_FLOOR_PIXELS)])
def test_video_frames_shrink_to_the_files_budget_but_not_below_the_floor(tmp_path, budget, shrunk_to):
    """Six different 1280x720 frames: with a budget of 6 x 0.4 Mpx each is kept at 0.4 Mpx or less (before,
    never below full HD, so kept whole); with a budget far too small, at 640x360, the floor."""
    clip = _write_video(tmp_path / "clip.mp4", encoder("libx264", "h264", "mpeg4"), _block_frames(6, 1280, 720))
    m = sample_media(clip, n_frames=6, limits=MediaLimits(max_retained_pixels=budget))
    assert (m.width, m.height) == (1280, 720) and len(m.frames) == 6
    sizes = {frame.shape[:2] for frame in m.frames}
    assert len(sizes) == 1
    [(height, width)] = sizes
    assert 0.99 * shrunk_to <= width * height <= shrunk_to and abs(width / height - 16 / 9) < 0.01


# -- 2. faces stored at another display size are found again -------------------------------------------

def test_the_stored_boxes_frame_is_the_stored_size_or_the_coded_size_turned():
    """Before the display-aspect decode a video stored its coded size, though a rotated one's boxes were
    found in the turned frames: the boxes' frame is whichever differs from the new size along one side."""
    assert _stored_frame((384, 288), (512, 288)) == (384, 288)  # SAR 4:3: the width stretched
    assert _stored_frame((1920, 1080), (1080, 1920)) == (1080, 1920)  # a rotated phone video: only turned
    assert _stored_frame((400, 600), (600, 500)) == (600, 400)  # rotated, SAR 5:4: the turned height stretched
    assert _stored_frame((480, 720), (960, 720)) == (480, 720)  # SAR 2:1 turning a portrait frame landscape
    assert _stored_frame((600, 500), (600, 500)) is None and _stored_frame((None, None), (600, 500)) is None


@pytest.mark.slow
@pytest.mark.parametrize("stored_size, sx, sy", [((450, 500), 0.75, 1.0), ((400, 600), 1.0, 0.8)],
                         ids=["sar-4:3", "rotated-sar-5:4"])
def test_faces_stored_before_a_display_size_change_keep_their_rows_and_labels(tmp_path, lfw_dir, pipeline_models,
                                                                               stored_size, sx, sy):
    """Two people on a 600x500 picture, stored as the decode before the display aspect stored an
    anamorphic video (its coded size, the boxes squeezed along one side), an editor's decision on each
    face; re-stored at the display size: the same face rows, with their labels, at the new boxes. Before,
    neither was found again: each decided face stayed at its squeezed box beside an undecided twin."""
    picture = Image.new("RGB", (600, 500), (255, 255, 255))
    picture.paste(Image.open(lfw_dir / "Hugo_Chavez" / "Hugo_Chavez_0001.jpg").convert("RGB"), (0, 0))
    picture.paste(Image.open(lfw_dir / "Serena_Williams" / "Serena_Williams_0001.jpg").convert("RGB"), (350, 250))
    picture.save(tmp_path / "two.jpg", quality=95)
    settings = ingest_settings(tmp_path)
    [result] = list(IngestPipeline(settings, **pipeline_models).run([tmp_path / "two.jpg"]))
    assert result.status == "ok" and len(result.faces) == 2 and (result.width, result.height) == (600, 500)
    store = open_store(settings.resolved_database_url)
    with session_scope(store) as s:
        media = store_result(s, result, None)
        media.width, media.height = stored_size
        for face in s.scalars(select(Face)):
            face.x1, face.x2, face.y1, face.y2 = face.x1 * sx, face.x2 * sx, face.y1 * sy, face.y2 * sy
    with store() as s:
        ids = list(s.scalars(select(Face.id).order_by(Face.face_index)))
    person, _ = add_class(store, "Kept Person", "ann")
    relabel_faces(store, ids, person, "ann")

    with session_scope(store) as s:
        store_result(s, result, _find_media(s, result))
    with store() as s:
        faces = list(s.scalars(select(Face).order_by(Face.face_index)))
        labels = {label.face_id: (label.status, label.class_id) for label in s.scalars(select(FaceLabel))}
        size = s.execute(select(Media.width, Media.height)).one()
    assert [f.id for f in faces] == ids and tuple(size) == (600, 500)
    assert labels == {face_id: ("relabeled", person) for face_id in ids}
    for face, found in zip(faces, result.faces):
        assert [face.x1, face.y1, face.x2, face.y2] == pytest.approx(list(found.box))


# -- 4. a hard link is no copy, in the batch or before it ----------------------------------------------

@pytest.mark.slow
def test_a_hard_link_is_no_copy_in_the_batch_nor_before_it(tmp_path, lfw_dir, pipeline_models):
    """a.jpg and its hard link b.jpg: one file under two names. Ingested together, or one after the other,
    no same-content note (before, the note came only when both were in the batch); a real copy still has one."""
    (tmp_path / "in").mkdir()
    a = _photo(lfw_dir, "Tony_Blair", tmp_path / "in" / "a.jpg")
    b = tmp_path / "in" / "b.jpg"
    os.link(a, b)
    settings = ingest_settings(tmp_path)
    pipeline = IngestPipeline(settings, **pipeline_models)
    together = ingest([tmp_path / "in"], settings, pipeline=pipeline)
    assert (together.ingested, together.cached, together.copies, together.notes) == (1, 0, 1, [])
    assert ingest([a], settings, pipeline=pipeline).notes == []  # the link stored before, its file met now
    assert ingest([b], settings, pipeline=pipeline).notes == []
    copy = tmp_path / "in" / "c.jpg"
    copy.write_bytes(a.read_bytes())
    [media_id] = {m["id"] for m in together.media}
    assert ingest([tmp_path / "in"], settings, pipeline=pipeline).notes == [  # the item keeps its first name
        f"{copy}: same content as {a} (media {media_id}); stored once"]
