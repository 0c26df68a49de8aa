"""Three leftovers of the command line and the raw-dataset import:

1. An empty path (an unset shell variable, `giflens export "$DIR"`) was read as "." by every command but
   ingest: `import raw-dataset ""` imported the folder the command ran in, `export ""` exported into it.
   Each path argument or option is now refused when blank, exit 2, naming which (`_no_blank_paths`).
2. An unknown --face-model / --gif-model was exit 1 for ingest, an export naming the model (exit 0) for export,
   and the store blamed by predict, retrain and autotag: now one usage error, exit 2, with the known models.
3. A raw-dataset import looks at a still without a face once more with a border (`BorderRetryDetector`); a
   GIF or WebP of a single frame is a still too (a user's photo saved so), not only a JPEG or PNG: it gets the
   second look, and its largest face is the one labeled (`is_still`), where a one-frame GIF with two faces was
   left unlabeled as a clip of two people. Telling one frame from more stops at a GIF's second frame.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from labeling.cli import app

runner = CliRunner()
FACE_MODELS = "dlib-resnet-v1, facenet-vggface2"


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


# -- 1. a blank path is refused by every command, naming the argument -------------------------------------------

@pytest.mark.parametrize(("args", "name", "nothing"), [
    (["import", "raw-dataset", ""], "FOLDER", "nothing imported"),
    (["import", "classes", ""], "CSV", "nothing imported"),
    (["import", "attributes", ""], "CSV", "nothing imported"),
    (["import", "tags", " "], "FILE", "nothing imported"),  # blank, not only empty
    (["export", ""], "OUT_DIR", "nothing exported or verified"),
    (["export", "--verify", ""], "OUT_DIR", "nothing exported or verified"),
    (["export", "out", "--previous", ""], "--previous", "nothing exported"),
    (["audit", ""], "OUT_DIR", "nothing written"),
])
def test_a_blank_path_is_refused_naming_the_argument(tmp_path, monkeypatch, args, name, nothing):
    monkeypatch.chdir(tmp_path)  # what "" used to mean: nothing may be read or written here
    (tmp_path / "labels.csv").write_text("Label,Index\nBrad_Pitt,0\n", encoding="utf-8")  # bait for "." as FOLDER
    result = invoke(*args, "--data-dir", tmp_path / "data")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: {name} is empty: name a file or folder (an unset shell variable "
                                          f"gives an empty one); {nothing}"], result.output
    assert result.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]


# -- 2. an unknown model name is a usage error of every command that takes one ------------------------------------

@pytest.mark.parametrize("args", [
    ["ingest", "media", "--face-model", "nosuch"],
    ["export", "out", "--face-model", "nosuch"],
    ["predict", "--face-model", "nosuch"],
    ["retrain", "--face-model", "nosuch"],
])
def test_an_unknown_face_model_is_exit_2_with_the_known_ones(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "media").mkdir()
    result = invoke(*args, "--data-dir", tmp_path / "data")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [f"error: unknown face model 'nosuch' (--face-model); known: {FACE_MODELS}"]
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()  # refused before any store


def test_an_unknown_model_from_the_environment_or_for_gifs_is_exit_2_too(tmp_path, monkeypatch):
    (tmp_path / "media").mkdir()
    monkeypatch.setenv("GIFLENS_FACE_MODEL", "bogus")  # ingest names the variable, as before, now exit 2
    env = invoke("ingest", tmp_path / "media", "--data-dir", tmp_path / "data")
    assert env.exit_code == 2, env.output
    assert env.stderr.splitlines() == [f"error: unknown face model 'bogus' (GIFLENS_FACE_MODEL); known: {FACE_MODELS}"]
    monkeypatch.delenv("GIFLENS_FACE_MODEL")
    gif = invoke("autotag", "--gif-model", "nosuch", "--data-dir", tmp_path / "data")
    assert gif.exit_code == 2, gif.output
    assert gif.stderr.splitlines() == ["error: unknown GIF model 'nosuch' (--gif-model); known: efficientnet-lite0"]
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("command", ["export", "retrain"])
def test_a_known_model_the_store_does_not_hold_is_still_the_stores_refusal_exit_1(tmp_path, lfw_dir, command):
    """The exit-2 check is for names the registry does not know: facenet-vggface2 on a store of dlib embeddings
    is the store's content, refused as before (exit 1, naming what the store holds), not a usage error."""
    from conftest import photo_faces

    from labeling.classes import add_class
    from labeling.db import open_store
    from models.settings import Settings

    data = tmp_path / "data"
    data.mkdir()
    store = open_store(Settings(data_dir=data).resolved_database_url)
    add_class(store, "George W Bush", "ann", seed_face_ids=photo_faces(store, data, lfw_dir / "George_W_Bush", 2))
    args = [tmp_path / "out"] if command == "export" else []
    result = invoke(command, *args, "--face-model", "facenet-vggface2", "--data-dir", data)
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == ["error: the store has no face embeddings of model 'facenet-vggface2' "
                                          "(it has dlib-resnet-v1 (2 faces))"], result.stderr
    assert not (tmp_path / "out").exists()


# -- 3. a one-frame GIF or WebP gets the import's second look, as a JPEG does ------------------------------------

def test_one_frame_or_more_is_told_at_the_second_frame(tmp_path):
    """`is_one_frame` runs on every GIF of every import: its scan stops at a GIF's second frame (`stop_after`),
    what follows unread, so a long animation costs two frames' blocks, and answers as the whole scan did
    for a file cut short or corrupt."""
    from embeddings.media import MediaError, MediaLimits, is_one_frame, scan_gif

    limits = MediaLimits()
    red, blue = Image.new("RGB", (40, 30), "red"), Image.new("RGB", (40, 30), "blue")
    one, two, webp1, webp2 = (tmp_path / n for n in ("one.gif", "two.gif", "one.webp", "two.webp"))
    red.save(one)
    red.save(two, save_all=True, append_images=[blue, red], duration=100)
    red.save(webp1, lossless=True)
    red.save(webp2, save_all=True, append_images=[blue], duration=100, lossless=True)
    data = two.read_bytes()
    second = data.index(b"\x2c", data.index(b"\x2c") + 1)  # Pillow writes no 0x2c inside frame 1's blocks here
    cut = tmp_path / "cut.gif"  # frame 2's descriptor and nothing else: the whole scan refuses it
    cut.write_bytes(data[:second + 5])
    with pytest.raises(MediaError, match="ends inside frame 2"):
        scan_gif(cut, limits)
    assert scan_gif(cut, limits, stop_after=1).frames == 2  # stopped before reading it
    assert scan_gif(two, limits, stop_after=1).frames == 2 and scan_gif(two, limits).frames == 3
    one_cut = tmp_path / "one-cut.gif"  # one frame cut inside its image data: refused, so not a still
    one_cut.write_bytes(one.read_bytes()[:-6])
    assert [is_one_frame(p, limits) for p in (one, two, cut, one_cut, webp1, webp2)] == [
        True, False, False, False, True, False]


@pytest.mark.slow
def test_a_one_frame_gif_or_webp_of_a_tight_crop_gets_the_border_retry(tmp_path, lfw_dir, pipeline_models):
    """The aligned crop of LFW's Tony_Blair_0004 (what an export writes) is one MTCNN finds no face in, bare
    (tests/test_export_folders_and_verify.py); saved as a single-frame GIF or WebP it was read as an animation,
    never looked at twice, and the import skipped it ("no face found")."""
    from embeddings.media import sample_media
    from embeddings.pipeline import IngestPipeline
    from labeling.importers import import_pipeline
    from models.settings import Settings

    frame = np.asarray(Image.open(lfw_dir / "Tony_Blair" / "Tony_Blair_0004.jpg").convert("RGB"))
    (found,) = pipeline_models["detector"].detect([frame])[0]
    chip = Image.fromarray(pipeline_models["face"].align(frame, found))
    gif, webp, clip = tmp_path / "tight.gif", tmp_path / "tight.webp", tmp_path / "two-frames.gif"
    chip.save(gif)
    chip.save(webp, lossless=True)
    chip.save(clip, save_all=True, append_images=[chip.transpose(Image.Transpose.FLIP_LEFT_RIGHT)], duration=100)
    # the premise: bare, MTCNN finds no face in either file's one frame
    assert [len(sample_media(p).frames) for p in (gif, webp)] == [1, 1]
    assert pipeline_models["detector"].detect([sample_media(p).frames[0] for p in (gif, webp)]) == [[], []]

    settings = Settings(data_dir=tmp_path / "data")
    plain = {r.path.name: r.face_count for r in IngestPipeline(settings, **pipeline_models).run([gif, webp, clip])}
    assert plain == {"tight.gif": 0, "tight.webp": 0, "two-frames.gif": 0}
    imported = {r.path.name: r.face_count for r in import_pipeline(settings, **pipeline_models).run([gif, webp, clip])}
    # stills: the border finds the face; an animation is detected as any ingest does it (no second look)
    assert imported == {"tight.gif": 1, "tight.webp": 1, "two-frames.gif": 0}, imported
    # the import's answers are cached in a namespace of their own: an ordinary ingest after it keeps its own
    again = {r.path.name: r.face_count for r in IngestPipeline(settings, **pipeline_models).run([gif, webp, clip])}
    assert again == plain


@pytest.mark.slow
def test_a_one_frame_gif_with_two_faces_labels_its_largest_as_the_jpeg_and_webp_do(tmp_path, lfw_dir,
                                                                                   pipeline_models, monkeypatch):
    """One photo (George W Bush, Tony Blair small beside him) saved as JPEG, GIF and WebP in one class folder.
    A one-frame WebP is stored as an image, a one-frame GIF as a gif: its two faces were read as two people of
    a clip ("2 people (face tracks) in it; not labeled"). Now each of the three is a still: its largest face
    gets the class, the small one nothing."""
    from sqlalchemy import select

    from labeling import importers
    from labeling.db import open_store
    from labeling.schema import Face, FaceLabel, Media
    from models.settings import Settings

    folder = tmp_path / "raw" / "raw_dataset" / "George_W_Bush"
    folder.mkdir(parents=True)
    (tmp_path / "raw" / "labels.csv").write_text("Label,Index\nGeorge_W_Bush,0\n", encoding="utf-8")
    picture = Image.new("RGB", (400, 250), "white")
    picture.paste(Image.open(lfw_dir / "George_W_Bush" / "George_W_Bush_0001.jpg").convert("RGB"), (0, 0))
    picture.paste(Image.open(lfw_dir / "Tony_Blair" / "Tony_Blair_0001.jpg").convert("RGB").resize((125, 125)),
                  (265, 60))
    picture.save(folder / "pair.jpg", quality=95)
    picture.save(folder / "pair.gif")
    picture.save(folder / "pair.webp", lossless=True)

    settings = Settings(data_dir=tmp_path / "data")
    store = open_store(settings.resolved_database_url)
    real = importers.import_pipeline  # the import's own pipeline, with the networks this module loaded once
    monkeypatch.setattr(importers, "import_pipeline", lambda s: real(s, **pipeline_models))
    summary = importers.import_raw_dataset(store, tmp_path / "raw", settings, "ann")
    assert summary.labels == 3 and summary.skipped == [], summary
    with store() as s:
        faces = s.execute(select(Media.path, Media.kind, Media.total_frames, Face.x2 - Face.x1, FaceLabel.status)
                          .join(Face, Face.media_id == Media.id)
                          .outerjoin(FaceLabel, FaceLabel.face_id == Face.id)).all()
    by_file: dict[str, list] = {}
    for path, kind, total, width, status in faces:
        by_file.setdefault(path.rsplit(".", 1)[1], []).append((kind, total, width > 80, status))
    # the premise: the GIF is stored as a gif of one frame, both faces found in each file
    assert {ext: sorted(rows, key=lambda r: r[2]) for ext, rows in by_file.items()} == {
        ext: [(kind, 1, False, None), (kind, 1, True, "approved")]
        for ext, kind in (("jpg", "image"), ("gif", "gif"), ("webp", "image"))}
