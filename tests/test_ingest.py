"""End to end: real files through the real pipeline into a real store."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from conftest import ingest_settings
from embeddings.pipeline import IngestPipeline
from labeling.db import open_store, session_scope
from labeling.ingest import ingest
from labeling.schema import Face, FaceEmbedding, Media, MediaEmbedding, Track, bytes_to_vector
from models.registry import INFERENCE_CALLS
from models.settings import Settings

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _photos(lfw_dir: Path, person: str, n: int) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted((lfw_dir / person).glob("*.jpg"))[:n]]


def _two_person_gif(lfw_dir: Path, path: Path) -> Path:
    a, b = _photos(lfw_dir, "Tony_Blair", 4), _photos(lfw_dir, "Colin_Powell", 4)
    frames = [Image.fromarray(x) for pair in zip(a, b) for x in pair]  # A B A B A B A B
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def _run(paths, settings, models):
    return ingest(paths, settings, pipeline=IngestPipeline(settings, **models))


def test_gif_alternating_two_people_gives_two_tracks(tmp_path, lfw_dir, pipeline_models):
    gif = _two_person_gif(lfw_dir, tmp_path / "blair-powell.gif")
    settings = ingest_settings(tmp_path)
    result = next(IngestPipeline(settings, **pipeline_models).run([gif]))
    assert result.status == "ok" and result.kind == "gif" and result.total_frames == 8
    assert len(result.faces) == 8
    assert len(result.tracks) == 2
    members = sorted(sorted(result.faces[i].frame_index for i in t.face_indices) for t in result.tracks)
    assert members == [[0, 2, 4, 6], [1, 3, 5, 7]]
    for t in result.tracks:
        assert t.representative_face_index in t.face_indices
        assert abs(np.linalg.norm(t.vector) - 1) < 1e-4
        rep = result.faces[t.representative_face_index]
        crop = Image.open(settings.data_dir / rep.crop_path)
        assert crop.size == (150, 150)


def _sample_folder(tmp_path: Path, gifs_dir: Path, lfw_dir: Path) -> Path:
    folder = tmp_path / "media"
    folder.mkdir()
    for name in ("jlaw-nods.gif", "giphy-celeb-detection-example.gif", "don't-know-what-i-expected.gif"):
        (folder / name).write_bytes((gifs_dir / name).read_bytes())
    for photo in sorted((lfw_dir / "Serena_Williams").glob("*.jpg"))[:3]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    (folder / "notes.gif").write_text("this is not a gif\n")
    (folder / "cut.gif").write_bytes((gifs_dir / "awkward.gif").read_bytes()[:1500])
    (folder / "README.txt").write_text("not media, skipped")
    return folder


def test_ingest_store_and_warm_run_does_no_inference(tmp_path, gifs_dir, lfw_dir, pipeline_models, store_url):
    folder = _sample_folder(tmp_path, gifs_dir, lfw_dir)
    settings = ingest_settings(tmp_path, store_url)
    cold = _run([folder], settings, pipeline_models)
    assert (cold.ingested, cold.cached, cold.failed) == (6, 0, 2)
    assert cold.faces > 6
    reasons = dict(cold.failures)
    assert "content looks like text" in reasons[str(folder / "notes.gif")]
    assert str(folder / "cut.gif") in reasons

    store = open_store(store_url)
    with session_scope(store) as s:
        rows = {Path(m.path).name: m for m in s.scalars(select(Media))}
        assert rows["notes.gif"].status == "failed" and "text" in rows["notes.gif"].error
        assert rows["jlaw-nods.gif"].status == "ok" and rows["jlaw-nods.gif"].kind == "gif"
        assert len(rows["jlaw-nods.gif"].frame_hashes[0]) == 16
        assert rows["Serena_Williams_0001.jpg"].kind == "image"
        assert s.scalar(select(func.count()).select_from(Face)) == cold.faces
        vectors = [bytes_to_vector(e.vector, e.dim) for e in s.scalars(select(FaceEmbedding))]
        assert len(vectors) == cold.faces and all(abs(np.linalg.norm(v) - 1) < 1e-4 for v in vectors)
        gif_rows = list(s.scalars(select(MediaEmbedding)))
        assert len(gif_rows) == 3 and all(r.dim == 1280 and len(r.top_labels) == 5 for r in gif_rows)
        assert s.scalar(select(func.count()).select_from(Track)) >= 4

    with session_scope(store) as s:
        versions = {m.path: m.version for m in s.scalars(select(Media))}
        assert all(m.source_key for m in s.scalars(select(Media).where(Media.status == "ok")))
    calls = sum(INFERENCE_CALLS.values())
    seen = []
    warm = ingest([folder], settings, pipeline=IngestPipeline(settings, **pipeline_models), on_result=seen.append)
    assert sum(INFERENCE_CALLS.values()) == calls, "a warm run must not run any model"
    assert (warm.ingested, warm.cached, warm.failed, warm.faces) == (0, 6, 2, cold.faces)
    ok = [r for r in seen if r.status == "ok"]  # the store holds them: not even read from the cache
    assert len(ok) == 6 and all(r.stored_faces is not None and not r.faces for r in ok)
    with session_scope(store) as s:
        assert s.scalar(select(func.count()).select_from(Media)) == 8
        assert s.scalar(select(func.count()).select_from(Face)) == cold.faces
        ok = {m.path: m.version for m in s.scalars(select(Media).where(Media.status == "ok"))}
        assert all(versions[p] == v for p, v in ok.items()), "stored from the same cache entries: nothing rewritten"
        # a row stored from other cache entries (another model, an older giflens) is compared and re-keyed
        nods = s.scalar(select(Media).where(Media.path.endswith("jlaw-nods.gif")))
        nods.source_key = "older"
    _run([folder], settings, pipeline_models)
    with session_scope(store) as s:
        nods = s.scalar(select(Media).where(Media.path.endswith("jlaw-nods.gif")))
        assert nods.source_key != "older" and nods.version == versions[nods.path] + 2
        assert s.scalar(select(func.count()).select_from(Face)) == cold.faces


def _store_contents(url: str) -> dict[str, dict]:
    """Per media file name: its row and its faces with their embeddings, as comparable values."""
    with session_scope(open_store(url)) as s:
        out = {}
        for m in s.scalars(select(Media)):
            faces = s.execute(select(Face.frame_index, Face.x1, Face.y1, Face.x2, Face.y2, FaceEmbedding.vector)
                              .join(FaceEmbedding, FaceEmbedding.face_id == Face.id)
                              .where(Face.media_id == m.id).order_by(Face.face_index)).all()
            out[Path(m.path).name] = {"row": (m.sha256, m.kind, m.status, m.source_key, m.total_frames),
                                      "faces": [tuple(f) for f in faces],
                                      "tracks": s.scalar(select(func.count()).where(Track.media_id == m.id)),
                                      "gif": s.scalar(select(func.count()).where(MediaEmbedding.media_id == m.id))}
        return out


def test_fresh_store_over_a_warm_cache_is_filled_without_inference(tmp_path, gifs_dir, lfw_dir, pipeline_models):
    """The same data folder (so the same cache) behind a new, empty store: every row is written into the
    new store from the cache entries, and no model runs."""
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "jlaw-nods.gif").write_bytes((gifs_dir / "jlaw-nods.gif").read_bytes())
    for photo in sorted((lfw_dir / "Serena_Williams").glob("*.jpg"))[:2]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    url_a, url_b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    before = sum(INFERENCE_CALLS.values())
    cold = _run([folder], ingest_settings(tmp_path, url_a), pipeline_models)
    assert (cold.ingested, cold.cached, cold.failed) == (3, 0, 0) and cold.faces >= 3
    assert sum(INFERENCE_CALLS.values()) > before, "the cold run into store A runs the models"

    calls = dict(INFERENCE_CALLS)
    seen = []
    settings_b = ingest_settings(tmp_path, url_b)  # same data dir D, fresh store B
    fresh = ingest([folder], settings_b, pipeline=IngestPipeline(settings_b, **pipeline_models), on_result=seen.append)
    assert dict(INFERENCE_CALLS) == calls, "a warm cache must fill a new store without running any model"
    assert (fresh.ingested, fresh.cached, fresh.failed, fresh.faces) == (0, 3, 0, cold.faces)
    # read from the cache, not short-circuited by the store: B held none of them
    assert len(seen) == 3 and all(r.from_cache and r.stored_faces is None for r in seen)
    assert sum(len(r.faces) for r in seen) == cold.faces

    a, b = _store_contents(url_a), _store_contents(url_b)
    assert sorted(b) == sorted(a) == sorted(p.name for p in folder.iterdir())
    assert b == a  # the same rows, faces, boxes, embeddings, tracks and GIF embeddings
    with session_scope(open_store(url_b)) as s:
        assert s.scalar(select(func.count()).select_from(Face)) == cold.faces
        assert s.scalar(select(func.count()).select_from(FaceEmbedding)) == cold.faces


def test_same_bytes_under_two_names_is_one_media(tmp_path, gifs_dir, pipeline_models):
    data = (gifs_dir / "hello.gif").read_bytes()
    (tmp_path / "a.gif").write_bytes(data)
    (tmp_path / "b.gif").write_bytes(data)
    settings = ingest_settings(tmp_path)
    summary = _run([tmp_path / "a.gif", tmp_path / "b.gif"], settings, pipeline_models)
    assert (summary.ingested, summary.cached, summary.copies) == (1, 0, 1)  # a copy is no cache hit
    with session_scope(open_store(settings.resolved_database_url)) as s:
        assert s.scalar(select(func.count()).select_from(Media)) == 1


def test_video_ingest_finds_faces(tmp_path, lfw_dir, pipeline_models):
    import av

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 250, 250, "yuv420p"
        for photo in _photos(lfw_dir, "Gerhard_Schroeder", 3):
            for _ in range(5):
                for packet in stream.encode(av.VideoFrame.from_ndarray(photo, format="rgb24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    result = next(IngestPipeline(ingest_settings(tmp_path), **pipeline_models).run([path]))
    assert result.status == "ok", result.error
    assert result.kind == "video" and result.total_frames == 15
    assert len(result.faces) >= 3 and {f.frame_index // 5 for f in result.faces} == {0, 1, 2}  # a face per photo
    assert 1 <= len(result.tracks) <= 3 and all(f.track_index >= 0 for f in result.faces)
    assert result.gif_embedding is not None and result.gif_embedding.shape == (1280,)


def test_changing_face_model_params_makes_a_new_namespace(tmp_path, gifs_dir):
    a = IngestPipeline(Settings(data_dir=tmp_path))
    b = IngestPipeline(Settings(data_dir=tmp_path, min_face_size=40))
    c = IngestPipeline(Settings(data_dir=tmp_path, frames=8))
    assert len({a._faces_namespace()[0], b._faces_namespace()[0], c._faces_namespace()[0]}) == 3
    assert a._gif_namespace()[0] == b._gif_namespace()[0] != c._gif_namespace()[0]


def _cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "labeling.cli", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def _media_rows(db: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM media").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def test_cli_killed_half_way_resumes_without_duplicates(tmp_path, gifs_dir):
    folder = tmp_path / "gifs"
    folder.mkdir()
    names = sorted(p.name for p in gifs_dir.glob("*.gif"))[:12]
    for name in names:
        (folder / name).write_bytes((gifs_dir / name).read_bytes())
    data_dir = tmp_path / "data"
    proc = _cli("ingest", str(folder), "--data-dir", str(data_dir), "--frames", "4")
    cache, db = data_dir / "cache", data_dir / "giflens.db"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists() and _media_rows(db) >= 2:  # stored, so every stage of those files is cached
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    rerun = _cli("ingest", str(folder), "--data-dir", str(data_dir), "--frames", "4")
    out, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, err
    last = out.strip().splitlines()[-1]
    ingested, cached = (int(part.split()[1]) for part in last.split(", ")[:2])
    assert ingested + cached == 12 and cached >= 2 and "failed 0" in last
    settings = Settings(data_dir=data_dir)
    with session_scope(open_store(settings.resolved_database_url)) as s:
        assert s.scalar(select(func.count()).select_from(Media)) == 12
        assert s.scalar(select(func.count(func.distinct(Media.sha256)))) == 12
        # the killed run never wrote its audit event: the re-run names what it stored, so every row has one
        from labeling.schema import AuditEntity
        audited = set(s.scalars(select(AuditEntity.key)))
        assert {f"media:{m}" for m in s.scalars(select(Media.id))} <= audited
    assert not any((cache / ".tmp").iterdir())


def test_cli_reports_unknown_or_unavailable_face_models(tmp_path, gifs_dir):
    proc = _cli("ingest", str(gifs_dir / "hello.gif"), "--data-dir", str(tmp_path), "--face-model", "nope")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "unknown face model" in err
    proc = _cli("ingest", str(gifs_dir / "hello.gif"), "--data-dir", str(tmp_path), "--face-model", "facenet-vggface2",
                env={"TORCH_HOME": str(tmp_path / "torch")})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "facenet-vggface2 weights not found" in err


# -- the CLI's failure path and its audit event ------------------------------------------------------
def _mixed_folder(tmp_path: Path, gifs_dir: Path) -> Path:
    """A good GIF, a text file named like a GIF and a GIF cut short: one success, two failures."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "jlaw-nods.gif").write_bytes((gifs_dir / "jlaw-nods.gif").read_bytes())
    (folder / "bad.gif").write_text("this is a text file, not a GIF\n")
    (folder / "truncated.gif").write_bytes((gifs_dir / "awkward.gif").read_bytes()[:2048])
    return folder


def _audit(url: str) -> list:
    from labeling.schema import AuditEntity, AuditEvent

    with open_store(url)() as s:
        return [(e, sorted(s.scalars(select(AuditEntity.key).where(AuditEntity.event_id == e.id))))
                for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]


def test_cli_lists_failures_and_audits_the_batch_once(tmp_path, gifs_dir):
    from typer.testing import CliRunner

    from labeling.audit import history
    from labeling.cli import _os_user, app

    folder = _mixed_folder(tmp_path, gifs_dir)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    where = ["--data-dir", str(tmp_path / "data"), "--database-url", url, "--frames", "8"]
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", str(folder), *where, "--editor", "ann"])
    assert result.exit_code == 0, result.output  # the batch ran: failed files are not a failed command

    store = open_store(url)
    with store() as s:
        rows = {Path(m.path).name: m for m in s.scalars(select(Media))}
        faces = s.scalar(select(func.count()).select_from(Face))
    assert faces >= 1 and rows["jlaw-nods.gif"].status == "ok"
    assert result.stdout.strip().splitlines()[-1] == f"ingested 1, cached 0, failed 2, faces {faces}"
    # every failure is listed on stderr with the reason the store keeps for it
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed ")]
    assert len(failed) == 2, result.stderr
    for name in ("bad.gif", "truncated.gif"):
        row = rows[name]
        assert row.status == "failed" and row.error and str(folder / name) in row.error
        assert [line for line in failed if str(folder / name) in line] == [f"failed {row.error}"]
    assert "content looks like text" in rows["bad.gif"].error

    # one summary event for the whole batch, naming the editor, the counts and every file
    [(event, keys)] = _audit(url)
    assert (event.operation, event.editor, event.n_entities) == ("ingest", "ann", 3)
    assert {k: event.after[k] for k in ("ingested", "cached", "failed", "faces")} == \
        {"ingested": 1, "cached": 0, "failed": 2, "faces": faces}
    assert sorted((m["id"], Path(m["path"]).name, m["status"]) for m in event.after["media"]) == \
        sorted((r.id, name, r.status) for name, r in rows.items())
    assert {m["error"] for m in event.after["media"] if m["status"] == "failed"} == \
        {rows["bad.gif"].error, rows["truncated.gif"].error}
    assert keys == sorted(f"media:{r.id}" for r in rows.values())
    assert [h.operation for h in history(store, f"media:{rows['jlaw-nods.gif'].id}")] == ["ingest"]

    # a re-run changes nothing in the store, so it records nothing; a new file is a new batch, by the OS user
    again = runner.invoke(app, ["ingest", str(folder), *where, "--editor", "ann"])
    assert again.exit_code == 0 and again.stdout.strip().splitlines()[-1] == f"ingested 0, cached 1, failed 2, faces {faces}"
    assert len(_audit(url)) == 1
    (folder / "hello.gif").write_bytes((gifs_dir / "hello.gif").read_bytes())
    third = runner.invoke(app, ["ingest", str(folder), *where])
    assert third.exit_code == 0, third.output
    (_, _), (event, keys) = _audit(url)
    with store() as s:
        hello = s.scalars(select(Media.id).where(Media.path == str(folder / "hello.gif"))).one()
    assert (event.editor, event.after["ingested"], event.after["cached"], keys) == (_os_user(), 1, 1, [f"media:{hello}"])

    # a newline in a file name is shown escaped: one failure, one line
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "two\nlines.gif").write_text("not a GIF\n")
    fourth = runner.invoke(app, ["ingest", str(odd), *where])
    failed = [line for line in fourth.stderr.splitlines() if line.startswith("failed ")]
    assert fourth.exit_code == 0 and len(failed) == 1 and "two\\nlines.gif: not a supported" in failed[0]
    assert not [line for line in fourth.stderr.splitlines() if line.strip().startswith("lines.gif")]


def test_cli_refuses_a_blank_editor_before_storing_anything(tmp_path, gifs_dir):
    from typer.testing import CliRunner

    from labeling.cli import app

    url = f"sqlite:///{tmp_path / 'store.db'}"
    result = CliRunner().invoke(app, ["ingest", str(gifs_dir / "hello.gif"), "--data-dir", str(tmp_path / "data"),
                                      "--database-url", url, "--editor", "   "])
    assert result.exit_code == 1 and "an editor name is required" in result.stderr
    with open_store(url)() as s:
        assert s.scalar(select(func.count()).select_from(Media)) == 0


def test_undo_of_an_ingest_event_is_refused(tmp_path, gifs_dir, pipeline_models):
    """Undo restores editor decisions; an ingest record is not one, and deleting media is never an undo."""
    from labeling.audit import undo_event, undo_last
    from labeling.errors import UndoError

    settings = ingest_settings(tmp_path)
    store = open_store(settings.resolved_database_url)
    summary = ingest([gifs_dir / "hello.gif"], settings, pipeline=IngestPipeline(settings, **pipeline_models),
                     store=store, editor="ann")
    assert summary.event_id is not None
    with pytest.raises(UndoError, match=rf"operation {summary.event_id} \(ingest\) cannot be undone"):
        undo_event(store, summary.event_id, "ann")
    with pytest.raises(UndoError):  # "Undo last" passes over it: ann has no decision to take back
        undo_last(store, "ann")
    with store() as s:
        assert s.scalar(select(func.count()).select_from(Media)) == 1


def test_what_a_folder_holds_that_is_no_readable_file_is_recorded_as_failed(tmp_path, gifs_dir, pipeline_models):
    """A pipe, a broken link and a link loop named like media are failures with their reason (a pipe
    used to hang the batch: hashing waits for a writer forever), and two copies of one bad file each
    fail under their own name; the good GIF beside them is ingested."""
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "good.gif").write_bytes((gifs_dir / "hello.gif").read_bytes())
    os.mkfifo(folder / "pipe.gif")
    (folder / "dangling.gif").symlink_to(folder / "gone.gif")
    (folder / "loop-a.gif").symlink_to(folder / "loop-b.gif")
    (folder / "loop-b.gif").symlink_to(folder / "loop-a.gif")
    for name in ("bad-1.gif", "bad-2.gif"):
        (folder / name).write_text("GIF89a and then nothing a decoder can use\n")
    settings = ingest_settings(tmp_path)
    summary = ingest([folder], settings, pipeline=IngestPipeline(settings, **pipeline_models))
    reasons = {Path(p).name: r for p, r in summary.failures}
    assert summary.ingested == 1 and set(reasons) == {"pipe.gif", "dangling.gif", "loop-a.gif", "loop-b.gif",
                                                      "bad-1.gif", "bad-2.gif"}
    assert "not a regular file" in reasons["pipe.gif"] and "no such file" in reasons["dangling.gif"]
    assert "symbolic links" in reasons["loop-a.gif"]
    assert "bad-2.gif" in reasons["bad-2.gif"] and "bad-1.gif" not in reasons["bad-2.gif"]


def test_a_file_replaced_by_other_content_is_noted(tmp_path, lfw_dir, pipeline_models):
    """The same path, new bytes: a new item, and a note that the earlier item's file is now this one
    (the earlier item keeps its faces and labels: editors' work is never dropped by an ingest)."""
    photo = tmp_path / "x.jpg"
    photo.write_bytes((lfw_dir / "Hugo_Chavez" / "Hugo_Chavez_0001.jpg").read_bytes())
    settings = ingest_settings(tmp_path)
    pipeline = IngestPipeline(settings, **pipeline_models)
    first = ingest([photo], settings, pipeline=pipeline)
    assert first.notes == [] and first.ingested == 1
    photo.write_bytes((lfw_dir / "Serena_Williams" / "Serena_Williams_0001.jpg").read_bytes())
    second = ingest([photo], settings, pipeline=pipeline)
    old = first.media[0]["id"]
    assert second.ingested == 1 and len(second.notes) == 1
    assert f"than when it was ingested as media {old};" in second.notes[0] and str(photo) in second.notes[0]
    assert ingest([photo], settings, pipeline=pipeline).notes == []  # said once, when it happens


def test_a_re_ingest_that_detects_differently_keeps_the_faces_editors_labelled(tmp_path, lfw_dir, pipeline_models):
    """Other frames sampled or another detector setting move a box by a few pixels: the face is the
    same row (its label stays); a face not found again goes, unless an editor decided it; a new one
    is added. Before, any difference deleted every face of the item, and their labels with them."""
    import copy

    from labeling.classes import add_class
    from labeling.face_labels import relabel_faces
    from labeling.ingest import _find_media, store_result
    from labeling.schema import FaceLabel

    photo = tmp_path / "two.jpg"
    left = Image.open(lfw_dir / "Hugo_Chavez" / "Hugo_Chavez_0001.jpg").convert("RGB")
    right = Image.open(lfw_dir / "Serena_Williams" / "Serena_Williams_0001.jpg").convert("RGB")
    both = Image.new("RGB", (500, 250))
    both.paste(left, (0, 0))
    both.paste(right, (250, 0))
    both.save(photo, quality=95)
    settings = ingest_settings(tmp_path)
    [result] = list(IngestPipeline(settings, **pipeline_models).run([photo]))
    assert result.status == "ok" and len(result.faces) >= 2
    store = open_store(settings.resolved_database_url)

    def stored(res) -> list[tuple[int, int, float]]:
        with session_scope(store) as s:
            store_result(s, res, _find_media(s, res))
        with store() as s:
            return [(f.id, f.face_index, f.x1) for f in s.scalars(select(Face).order_by(Face.face_index))]

    faces = stored(result)
    person, _ = add_class(store, "Kept Person", "ann")
    relabel_faces(store, [faces[0][0]], person, "ann")

    moved = copy.deepcopy(result)  # every box 6 px to the right: the same faces, detected a little differently
    for face in moved.faces:
        face.box = [face.box[0] + 6, face.box[1], face.box[2] + 6, face.box[3]]
    again = stored(moved)
    assert [f[0] for f in again] == [f[0] for f in faces] and again[0][2] == pytest.approx(faces[0][2] + 6)

    lost = copy.deepcopy(moved)  # the decided face is no longer found, the other one neither
    lost.faces = [face for face in lost.faces if face.face_index not in (0, 1)]
    for i, face in enumerate(lost.faces):
        face.face_index = i
    lost.tracks = []
    after = stored(lost)
    ids = [f[0] for f in after]
    assert faces[0][0] in ids and faces[1][0] not in ids  # the labelled one stays, the other goes
    with store() as s:
        label = s.scalars(select(FaceLabel).where(FaceLabel.face_id == faces[0][0])).one()
    assert (label.status, label.class_id) == ("relabeled", person)


def test_an_interrupted_batch_is_audited_for_what_it_stored(tmp_path, gifs_dir, pipeline_models):
    """Ctrl-C half-way (here: from the progress callback, after the first file is stored): the stored
    file keeps its audit event, marked interrupted, and the interruption still propagates."""
    settings = ingest_settings(tmp_path)
    store = open_store(settings.resolved_database_url)
    files = [gifs_dir / "hello.gif", gifs_dir / "jlaw-nods.gif"]

    def stop(_result) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest(files, settings, on_result=stop, pipeline=IngestPipeline(settings, **pipeline_models), store=store,
               editor="ann")
    [(event, keys)] = _audit(settings.resolved_database_url)
    with store() as s:
        [(media_id, path)] = s.execute(select(Media.id, Media.path)).all()
    assert (event.operation, event.editor, event.after["interrupted"], event.after["ingested"]) == ("ingest", "ann", True, 1)
    assert [m["path"] for m in event.after["media"]] == [path] == [str(files[0])] and keys == [f"media:{media_id}"]
    assert "interrupted" in event.summary
