"""Three leftovers of the command line and the raw-dataset import:

1. An empty path (an unset shell variable, `giflens export "$DIR"`) was read as "." by every command but
   ingest: `import raw-dataset ""` imported the folder the command ran in, `export ""` exported into it.
   Each path argument or option is now refused when blank, exit 2, naming which (`_no_blank_paths`).
2. An unknown --face-model / --gif-model was exit 1 for ingest, an export naming the model (exit 0) for export,
   and the store blamed by predict, retrain and autotag: now one usage error, exit 2, with the known models.
3. A raw-dataset import looks at a still without a face once more with a border (`BorderRetryDetector`); a
   GIF or WebP of a single frame is a still too (a user's photo saved so), not only a JPEG or PNG.
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


# -- 3. a one-frame GIF or WebP gets the import's second look, as a JPEG does ------------------------------------

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
