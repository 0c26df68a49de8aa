"""Ingest robustness: one bad file, name or store step fails that file only; concurrent ingests into
one store both finish; re-runs over duplicates and fixed files leave the store and the audit log tidy."""
from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from conftest import ingest_settings
from embeddings.cache import sha256_file
from embeddings.media import MediaError, decode_media
from embeddings.pipeline import CacheUnavailableError, IngestPipeline, non_utf8_name
from labeling import ingest as ingest_module
from labeling.db import open_store
from labeling.ingest import _store_file, ingest
from labeling.schema import AuditEntity, AuditEvent, Face, Media
from models.gif_embedder import center_crop_resize
from models.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def _photo(lfw_dir: Path, person: str, dest: Path) -> Path:
    dest.write_bytes((lfw_dir / person / f"{person}_0001.jpg").read_bytes())
    return dest


def _rows(url: str) -> list[tuple[int, str, str]]:
    with open_store(url)() as s:
        return [tuple(r) for r in s.execute(select(Media.id, Media.status, Media.path).order_by(Media.id))]


def _events(url: str) -> list[AuditEvent]:
    with open_store(url)() as s:
        return list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))


# -- 1. file names that are not UTF-8, and a store step that fails --------------------------------
@pytest.mark.slow

def _decoder_bug_on(monkeypatch, name: str) -> None:
    """Decoding the file called `name` raises what no media check expects, as a decoder bug would."""
    from embeddings import pipeline as pipeline_module

    real = pipeline_module.sample_media

    def sample_media(path, *args, **kwargs):
        if Path(path).name == name:
            raise RuntimeError("a decoder bug")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "sample_media", sample_media)

def test_a_file_name_that_is_not_utf8_fails_alone(tmp_path, lfw_dir, pipeline_models):
    """A Latin-1 name (bytes, on Linux) used to abort the batch with UnicodeEncodeError when its row
    was written, losing the good files after it; now it is one failure, stored under an escaped name."""
    folder = tmp_path / "in"
    folder.mkdir()
    latin1 = Path(os.fsdecode(bytes(folder) + b"/0-caf\xe9.jpg"))
    _photo(lfw_dir, "Tony_Blair", latin1)
    _photo(lfw_dir, "Colin_Powell", folder / "1-good.jpg")
    settings = ingest_settings(tmp_path)
    pipeline = IngestPipeline(settings, **pipeline_models)
    summary = ingest([folder], settings, pipeline=pipeline, editor="ann")
    assert (summary.ingested, summary.failed) == (1, 1)
    [(path, reason)] = summary.failures
    assert path == f"{folder}/0-caf\\xe9.jpg" and "not valid UTF-8: rename it" in reason
    assert summary.event_id is not None
    url = settings.resolved_database_url
    assert sorted((status, Path(p).name) for _, status, p in _rows(url)) == [("failed", "0-caf\\xe9.jpg"),
                                                                          ("ok", "1-good.jpg")]
    again = ingest([folder], settings, pipeline=pipeline, editor="ann")  # the same failure, the same row
    assert again.failed == 1 and len(_rows(url)) == 2 and again.event_id is None


@pytest.mark.slow
def test_an_error_while_storing_one_file_fails_only_that_file(tmp_path, lfw_dir, pipeline_models, monkeypatch):
    """Whatever the store step raises for one file (here after its rows were flushed) is rolled back
    and recorded as that file's failure, with the error's type; the files after it are stored."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name, person in (("a.jpg", "Tony_Blair"), ("b.jpg", "Colin_Powell"), ("c.jpg", "Hugo_Chavez")):
        _photo(lfw_dir, person, folder / name)
    real = ingest_module.store_result

    def store_result(session, result, media):
        stored = real(session, result, media)
        if result.path.name == "b.jpg":
            raise ValueError("the database refused a value")
        return stored

    monkeypatch.setattr(ingest_module, "store_result", store_result)
    settings = ingest_settings(tmp_path)
    summary = ingest([folder], settings, pipeline=IngestPipeline(settings, **pipeline_models), editor="ann")
    assert (summary.ingested, summary.failed) == (2, 1)
    [(path, reason)] = summary.failures
    assert path.endswith("b.jpg") and "could not be stored: ValueError: the database refused a value" in reason
    assert [Path(p).name for _, _, p in _rows(settings.resolved_database_url)] == ["a.jpg", "c.jpg"]  # b rolled back
    assert [m["status"] for m in summary.media] == ["ok", "failed", "ok"] and summary.media[1]["id"] is None


def _latin1(folder: Path, name: bytes) -> Path:
    """A path under folder whose last part is these bytes (not UTF-8: the name an old archive has)."""
    return Path(os.fsdecode(bytes(folder) + b"/" + name))


@pytest.mark.parametrize("path,message", [
    (b"/in/caf\xe9/photo.jpg", 'the folder name "caf\\xe9" is not valid UTF-8 (the file name is fine): rename that folder'),
    (b"/in/cafe/ph\xf6to.jpg", 'the file name "ph\\xf6to.jpg" is not valid UTF-8: rename it'),
    (b"/in/caf\xe9/sub/ph\xf6to.jpg",
     'the folder name "caf\\xe9" is not valid UTF-8, nor is the file name "ph\\xf6to.jpg": rename both'),
    (b"/in/cafe/photo.jpg", None)])
def test_the_name_that_is_not_utf8_is_the_one_named(path, message):
    assert non_utf8_name(os.fsdecode(path)) == message


def test_a_utf8_file_in_a_latin1_folder_is_told_to_rename_the_folder(tmp_path):
    """It was told "the file name is not valid UTF-8: rename it", and renaming the file changes nothing."""
    folder = _latin1(tmp_path, b"caf\xe9")
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(b"\xff\xd8 never decoded")
    settings = ingest_settings(tmp_path)
    summary = ingest([folder], settings, pipeline=IngestPipeline(settings))  # no model needed
    [(path, reason)] = summary.failures
    assert path == f"{tmp_path}/caf\\xe9/photo.jpg"
    assert reason == f'{path}: the folder name "caf\\xe9" is not valid UTF-8 (the file name is fine): rename that folder'
    assert [(status, p) for _, status, p in _rows(settings.resolved_database_url)] == [("failed", path)]


@pytest.mark.slow
def test_a_fixed_file_named_like_an_escaped_name_leaves_the_other_files_failure(tmp_path, lfw_dir, pipeline_models):
    """A Latin-1 café.jpg is stored as "caf\xe9.jpg" (escaped), the very text of a file literally named
    caf\xe9.jpg beside it. When the literal one is fixed in place, its own stale failure goes; the
    Latin-1 file's failure, which only reads the same, stays."""
    folder = tmp_path / "in"
    folder.mkdir()
    latin1, literal = _latin1(folder, b"caf\xe9.jpg"), folder / "caf\\xe9.jpg"
    _photo(lfw_dir, "Tony_Blair", latin1)
    data = (lfw_dir / "Colin_Powell" / "Colin_Powell_0001.jpg").read_bytes()
    literal.write_bytes(data[:5000])  # a download cut short
    settings = ingest_settings(tmp_path)
    url = settings.resolved_database_url
    pipeline = IngestPipeline(settings, **pipeline_models)
    assert ingest([latin1], settings, pipeline=pipeline).failed == 1
    assert ingest([literal], settings, pipeline=pipeline).failed == 1
    (name_id, _, name_path), (cut_id, _, cut_path) = _rows(url)
    assert name_path == cut_path == str(literal)  # two files, one text
    literal.write_bytes(data)  # the download completed
    fixed = ingest([literal], settings, pipeline=pipeline, editor="ann")
    assert fixed.ingested == 1 and fixed.removed == [{"id": cut_id, "path": str(literal)}]
    rows = _rows(url)
    assert (name_id, "failed", str(literal)) in rows and sorted(status for _, status, _ in rows) == ["failed", "ok"]


# -- 1b. the cache or the store failing stops the batch; a fault of the run never fails an ok row -----

def _one_photo_stored(tmp_path: Path, lfw_dir: Path, pipeline_models: dict):
    """(folder, a.jpg, settings, store URL, a's media id): one LFW photo ingested ok, the start of the
    cases where the same bytes come back under another name."""
    folder = tmp_path / "in"
    folder.mkdir()
    a = _photo(lfw_dir, "Tony_Blair", folder / "a.jpg")
    settings = ingest_settings(tmp_path)
    url = settings.resolved_database_url
    assert ingest([a], settings, pipeline=IngestPipeline(settings, **pipeline_models)).ingested == 1
    [(a_id, _, _)] = _rows(url)
    return folder, a, settings, url, a_id

def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.slow
def test_a_full_cache_disk_stops_the_batch_and_the_ok_row_stays_ok(tmp_path, lfw_dir, pipeline_models, monkeypatch):
    """The reviewer's case: a.jpg stored ok, then a copy ingested while the cache cannot be read (the disk
    full). Every file was recorded as failed, and the copy's failure turned a.jpg's ok row into a failed
    one at the copy's path. Now the batch stops with the cache's error, audited for what it stored."""
    folder, a, settings, url, a_id = _one_photo_stored(tmp_path, lfw_dir, pipeline_models)
    copy = folder / "b-copy.jpg"
    copy.write_bytes(a.read_bytes())
    other = _photo(lfw_dir, "Colin_Powell", folder / "a-other.jpg")
    pipeline = IngestPipeline(settings, chunk_size=1, **pipeline_models)  # a-other is stored before the copy fails
    real_get, sha_a = pipeline.cache.get, sha256_file(a)
    monkeypatch.setattr(pipeline.cache, "get", lambda ns, sha: _no_space() if sha == sha_a else real_get(ns, sha))
    with pytest.raises(CacheUnavailableError) as stopped:
        ingest([other, copy], settings, pipeline=pipeline, editor="ann")
    assert stopped.value.errno == errno.ENOSPC and isinstance(stopped.value, OSError)
    assert "embedding cache" in str(stopped.value) and "No space left on device" in str(stopped.value)
    assert [(status, p) for _, status, p in _rows(url)] == [("ok", str(a)), ("ok", str(other))]
    [event] = _events(url)  # the interrupted batch is audited for the file it stored
    assert event.after["interrupted"] and [m["path"] for m in event.after["media"]] == [str(other)]
    assert a_id not in [m["id"] for m in event.after["media"]]


def test_a_cache_that_cannot_be_written_stops_the_batch(tmp_path, monkeypatch):
    """Writing the first entry fails (a full disk): no file is to blame, so none is recorded as failed."""
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (200, 100, 50)).save(photo)
    settings = ingest_settings(tmp_path)
    pipeline = IngestPipeline(settings)  # the frames entry is written before any model is needed
    monkeypatch.setattr(pipeline.cache, "put", _no_space)
    with pytest.raises(CacheUnavailableError, match="No space left on device"):
        ingest([photo, tmp_path / "missing.gif"], settings, pipeline=pipeline)
    assert _rows(settings.resolved_database_url) == []


def test_a_store_that_cannot_be_read_stops_the_batch(tmp_path):
    """The store's look-up (`is_stored`) failing is no fault of the file: it propagates."""
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (200, 100, 50)).save(photo)

    def is_stored(sha256, source_key, path):
        raise OperationalError("SELECT", {}, Exception("disk I/O error"))

    with pytest.raises(OperationalError):
        list(IngestPipeline(ingest_settings(tmp_path)).run([photo], is_stored=is_stored))


@pytest.mark.slow
def test_an_unexpected_decoding_error_fails_that_file_and_never_an_ok_row_of_its_bytes(
        tmp_path, lfw_dir, pipeline_models, monkeypatch):
    """The same bytes stored ok once, decoded again (the cache was cleared) under another name, and the
    decoder hits a bug: that file fails, the next is stored, and the ok row keeps its status and path."""
    folder, a, settings, url, a_id = _one_photo_stored(tmp_path, lfw_dir, pipeline_models)
    shutil.rmtree(settings.cache_dir)
    copy = folder / "b-copy.jpg"
    copy.write_bytes(a.read_bytes())
    other = _photo(lfw_dir, "Colin_Powell", folder / "c-other.jpg")
    _decoder_bug_on(monkeypatch, "b-copy.jpg")
    summary = ingest([copy, other], settings, pipeline=IngestPipeline(settings, **pipeline_models), editor="ann")
    assert (summary.ingested, summary.failed) == (1, 1)
    [(path, reason)] = summary.failures
    assert path == str(copy) and "unexpected error while reading the file: RuntimeError: a decoder bug" in reason
    assert summary.media[0] == {"id": None, "path": str(copy), "status": "failed", "error": reason}
    assert summary.notes == [f"{copy}: not recorded as failed (error): media {a_id}, the same content at {a}, stays ok"]
    assert [(m, status, p) for m, status, p in _rows(url)][0] == (a_id, "ok", str(a))
    assert [status for _, status, _ in _rows(url)] == ["ok", "ok"]


# -- 2. two ingests into one store at once ----------------------------------------------------------
def _warm_cache(folder: Path, settings: Settings, models: dict) -> None:
    """Fill the embedding cache through a throw-away store, so the runs under test infer nothing."""
    warm = Settings(data_dir=settings.data_dir, database_url=f"sqlite:///{settings.data_dir / 'warm.db'}")
    assert ingest([folder], warm, pipeline=IngestPipeline(warm, **models)).failed == 0


def _lfw_folder(tmp_path: Path, lfw_dir: Path, n: int) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    people = sorted(p.name for p in lfw_dir.iterdir() if (p / f"{p.name}_0001.jpg").is_file())[:n]
    for person in people:
        _photo(lfw_dir, person, folder / f"{person}.jpg")
    return folder


@pytest.mark.slow
def test_an_ingest_waits_for_another_writer_instead_of_failing(tmp_path, lfw_dir, pipeline_models):
    """Another writer holds SQLite's write lock and commits while this ingest wants to write: with a
    deferred BEGIN its read snapshot went stale and it died with "database is locked"; a write scope
    (BEGIN IMMEDIATE) waits for the lock instead, and the batch is stored."""
    folder = _lfw_folder(tmp_path, lfw_dir, 3)
    settings = ingest_settings(tmp_path)
    _warm_cache(folder, settings, pipeline_models)
    store = open_store(settings.resolved_database_url)
    db = settings.resolved_database_url.removeprefix("sqlite:///")
    other = sqlite3.connect(db, isolation_level=None, timeout=30)
    other.execute("CREATE TABLE other_writer (x INTEGER)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO other_writer VALUES (1)")
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["summary"] = ingest([folder], settings, pipeline=IngestPipeline(settings, **pipeline_models),
                                        store=store, editor="ann")
        except Exception as exc:  # noqa: BLE001 - asserted below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(3)  # the ingest reaches its first write and waits for the lock
    other.execute("COMMIT")
    other.close()
    thread.join(120)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"].cached == 3 and len(_rows(settings.resolved_database_url)) == 3


@pytest.mark.slow
def test_two_cli_ingests_of_one_folder_into_one_store_both_finish(tmp_path, lfw_dir, pipeline_models):
    folder = _lfw_folder(tmp_path, lfw_dir, 24)
    settings = ingest_settings(tmp_path)
    _warm_cache(folder, settings, pipeline_models)
    open_store(settings.resolved_database_url)  # the store exists (migrated) before both start
    runs = [subprocess.Popen([sys.executable, "-m", "labeling.cli", "ingest", str(folder), "--data-dir",
                              str(settings.data_dir), "--editor", editor], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for editor in ("p1", "p2")]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    with open_store(settings.resolved_database_url)() as s:
        assert s.scalar(select(func.count()).select_from(Media)) == 24
        assert s.scalar(select(func.count(func.distinct(Media.sha256)))) == 24
        audited = set(s.scalars(select(AuditEntity.key)))
        assert {f"media:{m}" for m in s.scalars(select(Media.id))} <= audited


@pytest.mark.slow
def test_the_same_bytes_inserted_meanwhile_by_another_ingest_are_updated_not_a_crash(
        tmp_path, lfw_dir, pipeline_models, store_url, monkeypatch):
    """Two ingests both look the file up, find nothing, and insert: the second insert breaks the unique
    key on sha256 (PostgreSQL lets both look before either commits). Simulated by a look-up that
    misses the row once: the store step is tried again and updates the row the other one stored."""
    photo = _photo(lfw_dir, "Tony_Blair", tmp_path / "a.jpg")
    settings = ingest_settings(tmp_path, store_url)
    [result] = list(IngestPipeline(settings, **pipeline_models).run([photo]))
    store = open_store(store_url)
    first = _store_file(store, result)
    real, misses = ingest_module._find_media, []

    def find_media(session, res):
        if not misses:
            misses.append(res.path)
            return None  # the other ingest's row is not there yet when this one looks
        return real(session, res)

    monkeypatch.setattr(ingest_module, "_find_media", find_media)
    again = _store_file(store, result)
    assert misses and again.media_id == first.media_id and again.path_before == str(photo)
    with store() as s:
        assert s.scalar(select(func.count()).select_from(Media)) == 1


# -- 3. variable frame rate WebM ---------------------------------------------------------------------
def write_timed_video(path: Path, codec: str, rate: int, frames: Sequence[np.ndarray], steps_ms: Sequence[int],
                      options: dict[str, str] | None = None) -> Path:
    """A 64x48 video whose frames sit `steps_ms` apart (frame i then i + 1), whatever `rate` it declares:
    how variable-frame-rate files (screen recorders, MediaRecorder) are laid out."""
    time_base = Fraction(1, 1000)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = stream.time_base = time_base
        stream.options = options or {}
        t = 0
        for pixels, step in zip(frames, steps_ms):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = t, time_base
            t += step
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _vfr_webm(path: Path) -> Path:
    """Nominal 30 fps; 30 frames 33 ms apart, then 30 frames 200 ms apart (a still screen), as screen
    recorders and browsers' MediaRecorder write. WebM states no frame count, only the duration."""
    return write_timed_video(path, "libvpx-vp9", 30, [np.full((48, 64, 3), i * 4, np.uint8) for i in range(60)],
                             [33] * 30 + [200] * 30)


def test_a_complete_variable_frame_rate_webm_is_sampled_from_what_it_holds(tmp_path):
    decoded = decode_media(_vfr_webm(tmp_path / "vfr.webm"), 16)  # was refused: "announces 205 frames, 60 decode"
    assert decoded.total == 60 and len(decoded.frames) == 16 and decoded.indices[-1] <= 59
    assert decoded.indices == sorted(set(decoded.indices))


def test_a_cut_off_variable_frame_rate_webm_is_still_truncated(tmp_path):
    data = _vfr_webm(tmp_path / "vfr.webm").read_bytes()
    (tmp_path / "cut.webm").write_bytes(data[: len(data) // 2])  # the header still states the whole duration
    with pytest.raises(MediaError) as refused:
        decode_media(tmp_path / "cut.webm", 16)
    assert refused.value.reason == "truncated"


# -- 4. unknown codecs and unexpected errors ---------------------------------------------------------
def _unknown_codec_mkv(path: Path) -> Path:
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = path.read_bytes()
    assert b"V_MPEG4/ISO/ASP" in data
    path.write_bytes(data.replace(b"V_MPEG4/ISO/ASP", b"V_QQQQQ/ISO/ASP"))  # a codec id FFmpeg does not know
    return path


def test_a_video_with_an_unknown_codec_is_unsupported(tmp_path):
    with pytest.raises(MediaError) as refused:  # was an AttributeError: codec_context is None
        decode_media(_unknown_codec_mkv(tmp_path / "clip.mkv"))
    assert refused.value.reason == "unsupported" and "unsupported codec" in str(refused.value)


@pytest.mark.parametrize("error,reason", [("DecoderNotFoundError", "unsupported"), ("BugError", "truncated"),
                                          ("ExternalError", "truncated")])
def test_an_ffmpeg_error_is_a_media_error(tmp_path, monkeypatch, error, reason):
    """PyAV's errors derive from FFmpegError; those that are no OSError or ValueError (a missing
    decoder, a bug report) escaped the old catch list and stopped the batch."""
    from embeddings import media

    def broken(path, n_frames, limits):
        raise getattr(av.error, error)(-1, "something FFmpeg reports")

    monkeypatch.setattr(media, "_decode_video", broken)
    with pytest.raises(MediaError) as refused:
        decode_media(_unknown_codec_mkv(tmp_path / "clip.mkv"))
    assert refused.value.reason == reason and "something FFmpeg reports" in str(refused.value)


@pytest.mark.slow
def test_an_unexpected_error_while_decoding_one_file_fails_only_that_file(tmp_path, lfw_dir, pipeline_models,
                                                                          monkeypatch):

    folder = tmp_path / "in"
    folder.mkdir()
    _unknown_codec_mkv(folder / "a-clip.mkv")
    _photo(lfw_dir, "Tony_Blair", folder / "b-odd.jpg")
    _photo(lfw_dir, "Colin_Powell", folder / "c-photo.jpg")
    _decoder_bug_on(monkeypatch, "b-odd.jpg")
    settings = ingest_settings(tmp_path)
    summary = ingest([folder], settings, pipeline=IngestPipeline(settings, **pipeline_models), editor="ann")
    reasons = {Path(p).name: r for p, r in summary.failures}
    assert summary.ingested == 1 and set(reasons) == {"a-clip.mkv", "b-odd.jpg"}
    assert "unsupported codec" in reasons["a-clip.mkv"] and "RuntimeError: a decoder bug" in reasons["b-odd.jpg"]


# -- 5. a very thin GIF through the GIF embedder's preprocessing ------------------------------------
def _resize_then_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """The preprocessing as it was (resize the whole frame, then crop): the reference."""
    h, w = frame.shape[:2]
    short = round(size * 256 / 224)
    scale = short / min(h, w)
    im = Image.fromarray(frame).resize((max(short, round(w * scale)), max(short, round(h * scale))),
                                       Image.Resampling.BILINEAR)
    left, top = (im.width - size) // 2, (im.height - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)))


@pytest.mark.parametrize("shape", [(250, 250), (480, 270), (270, 480), (100, 333), (1080, 1920), (37, 901), (224, 224)])
def test_cropping_before_resizing_gives_the_same_pixels(shape):
    frame = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    new, old = center_crop_resize(frame, 224).astype(int), _resize_then_crop(frame, 224).astype(int)
    assert new.shape == (224, 224, 3)
    assert np.abs(new - old).max() <= 1 and (new != old).mean() < 0.01  # a rounding step in a few values


def test_a_very_thin_frame_is_preprocessed_in_little_memory(tmp_path):
    """1 x 12,000 pixels (a 507-byte GIF): resizing before cropping made it 256 x 3,072,000, 2.4 GB
    for this frame alone. Under a 1 GB address-space limit the preprocessing must still succeed."""
    script = (
        "import resource, numpy as np\n"
        "import PIL.Image\n"
        "from models.gif_embedder import center_crop_resize\n"
        "frame = np.full((12000, 1, 3), 200, np.uint8); frame[:6000] = 100\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "out = center_crop_resize(frame, 224)\n"
        "assert out.shape == (224, 224, 3), out.shape\n"
        "print('ok', int(out.mean()))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr[-2000:]


# -- 6. the same bytes under two names, re-run ----------------------------------------------------------
@pytest.mark.slow
def test_a_re_run_over_duplicate_files_writes_no_event_and_counts_faces_once(tmp_path, lfw_dir, pipeline_models):
    folder = tmp_path / "in"
    folder.mkdir()
    _photo(lfw_dir, "Tony_Blair", folder / "a.jpg")
    settings = ingest_settings(tmp_path)
    pipeline = IngestPipeline(settings, **pipeline_models)
    first = ingest([folder], settings, pipeline=pipeline, editor="ann")
    assert first.faces >= 1 and first.event_id is not None
    (folder / "b.jpg").write_bytes((folder / "a.jpg").read_bytes())
    for run in range(3):  # the first re-run records b.jpg as another name of the item (an event); then nothing
        again = ingest([folder], settings, pipeline=pipeline, editor="ann")
        assert (again.cached, again.faces, again.event_id is None) == (1, first.faces, run > 0)
    assert len(_events(settings.resolved_database_url)) == 2
    assert [p for _, _, p in _rows(settings.resolved_database_url)] == [str(folder / "a.jpg")]


@pytest.mark.slow
def test_two_copies_in_one_cold_batch_count_their_faces_once(tmp_path, lfw_dir, pipeline_models):
    folder = tmp_path / "in"
    folder.mkdir()
    _photo(lfw_dir, "Tony_Blair", folder / "a.jpg")
    (folder / "b.jpg").write_bytes((folder / "a.jpg").read_bytes())
    settings = ingest_settings(tmp_path)
    summary = ingest([folder], settings, pipeline=IngestPipeline(settings, **pipeline_models))
    with open_store(settings.resolved_database_url)() as s:
        assert summary.faces == s.scalar(select(func.count()).select_from(Face)) >= 1


# -- 7. a failed file fixed in place ---------------------------------------------------------------------
@pytest.mark.slow
def test_a_failed_file_fixed_in_place_replaces_its_failed_row(tmp_path, lfw_dir, pipeline_models):
    photo = tmp_path / "photo.jpg"
    data = (lfw_dir / "Tony_Blair" / "Tony_Blair_0001.jpg").read_bytes()
    photo.write_bytes(data[:5000])  # a download cut short
    settings = ingest_settings(tmp_path)
    url = settings.resolved_database_url
    pipeline = IngestPipeline(settings, **pipeline_models)
    failed = ingest([photo], settings, pipeline=pipeline, editor="ann")
    [(failed_id, status, _)] = _rows(url)
    assert failed.failed == 1 and status == "failed"
    photo.write_bytes(data)  # the download completed
    fixed = ingest([photo], settings, pipeline=pipeline, editor="ann")
    [(ok_id, status, path)] = _rows(url)  # the stale failure is gone
    assert (status, path) == ("ok", str(photo)) and ok_id != failed_id and fixed.notes == []
    assert fixed.removed == [{"id": failed_id, "path": str(photo)}]
    with open_store(url)() as s:
        event = s.get(AuditEvent, fixed.event_id)
        keys = set(s.scalars(select(AuditEntity.key).where(AuditEntity.event_id == fixed.event_id)))
    assert event.after["removed"] == fixed.removed and keys == {f"media:{ok_id}", f"media:{failed_id}"}


@pytest.mark.slow
def test_a_failed_row_with_faces_is_kept_when_its_path_is_stored_ok(tmp_path, lfw_dir, pipeline_models):
    """A failed row that has faces was ok once (an editor may have labelled them): never removed."""
    photo = _photo(lfw_dir, "Tony_Blair", tmp_path / "photo.jpg")
    settings = ingest_settings(tmp_path)
    url = settings.resolved_database_url
    store = open_store(url)
    with store.begin() as s:
        old = Media(sha256="0" * 64, path=str(photo), status="failed", error="was ok once")
        s.add(old)
        s.flush()
        s.add(Face(media_id=old.id, face_index=0, frame_index=0, x1=0, y1=0, x2=10, y2=10, probability=0.99,
                   landmarks=[[0.0, 0.0]] * 5))
    summary = ingest([photo], settings, pipeline=IngestPipeline(settings, **pipeline_models), store=store)
    assert summary.removed == [] and sorted(status for _, status, _ in _rows(url)) == ["failed", "ok"]


# -- 8. GIF areas no frame has drawn -------------------------------------------------------------------
def test_gif_areas_no_frame_drew_or_disposal_cleared_are_white(tmp_path):
    """Pillow fills them with a palette colour (index 0 before any frame, the background entry after
    disposal 2 without transparency); browsers show them transparent, which giflens makes white."""
    from test_media import _raw_gif  # the hand-written GIF writer: frame rectangles and disposal exactly

    red, green, blue, yellow = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
    path = _raw_gif(tmp_path / "partial.gif", (16, 16), [red, green, blue, yellow], [
        (0, 0, np.full((8, 8), 1), 2, None),  # green top-left, then "restore to background"
        (8, 8, np.full((8, 8), 2), 0, None),  # blue bottom-right
    ])
    first, second = decode_media(path, 16).frames
    assert first[0, 0].tolist() == list(green) and first[0, -1].tolist() == first[-1, -1].tolist() == [255] * 3
    assert second[0, 0].tolist() == [255] * 3 and second[-1, -1].tolist() == list(blue)
