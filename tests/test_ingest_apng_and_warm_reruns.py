"""Ingest fixes: the warm re-run's look-ups, animated PNG compositing (and the cache
entries of APNGs decoded before), symlinked folders over real ones, the data folder's own output, a
single-frame APNG beside its default image, the warm path's stale check for escaped names, and a GIF
ending in an extension without its trailer."""
from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import event, select

from conftest import ingest_settings
from embeddings.cache import sha256_file
from embeddings.media import MediaError, MediaLimits, decode_media, is_apng, scan_gif
from embeddings.pipeline import IngestPipeline, discover_media
from embeddings.sampling import evenly_spaced_indices
from labeling.db import open_store, session_scope
from labeling.ingest import ingest
from labeling.schema import Media
from models.settings import Settings


def _photo(lfw_dir: Path, person: str = "Tony_Blair", n: int = 1) -> Path:
    return sorted((lfw_dir / person).glob("*.jpg"))[n - 1]


def _jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "red").save(path)
    return path


# -- animated PNG written chunk by chunk, and the APNG spec's compositing as the reference -----------
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _zdata(rgba: np.ndarray) -> bytes:
    return zlib.compress(b"".join(b"\x00" + row.tobytes() for row in rgba))


def _write_apng(path: Path, size: int, frames: list, default: np.ndarray | None = None) -> Path:
    """frames: (rgba, x, y, dispose_op, blend_op); `default`: a default image that is no animation frame."""
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0))
    out += _chunk(b"acTL", struct.pack(">II", len(frames), 0))
    if default is not None:
        out += _chunk(b"IDAT", _zdata(default))
    seq = 0
    for i, (rgba, x, y, dispose, blend) in enumerate(frames):
        h, w = rgba.shape[:2]
        out += _chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, w, h, x, y, 1, 10, dispose, blend))
        seq += 1
        if i == 0 and default is None:
            out += _chunk(b"IDAT", _zdata(rgba))
        else:
            out += _chunk(b"fdAT", struct.pack(">I", seq) + _zdata(rgba))
            seq += 1
    path.write_bytes(out + _chunk(b"IEND", b""))
    return path


def _over(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    sa, da = src[..., 3:4] / 255.0, dst[..., 3:4] / 255.0
    alpha = sa + da * (1 - sa)
    rgb = np.where(alpha > 0, (src[..., :3] * sa + dst[..., :3] * da * (1 - sa)) / np.maximum(alpha, 1e-9), 0)
    return np.concatenate([rgb, alpha * 255], axis=-1)


def _spec_frames(size: int, frames: list) -> list[np.ndarray]:
    """Each frame as the APNG spec composites it (blend SOURCE / OVER, dispose NONE / BACKGROUND /
    PREVIOUS, PREVIOUS on the first frame meaning BACKGROUND), shown on white."""
    canvas, shown = np.zeros((size, size, 4)), []
    for i, (rgba, x, y, dispose, blend) in enumerate(frames):
        h, w = rgba.shape[:2]
        before = canvas.copy()
        area = canvas[y:y + h, x:x + w]
        canvas[y:y + h, x:x + w] = rgba.astype(float) if blend == 0 else _over(area, rgba.astype(float))
        alpha = canvas[..., 3:4] / 255.0
        shown.append(np.round(canvas[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8))
        if dispose == 1 or (dispose == 2 and i == 0):
            canvas[y:y + h, x:x + w] = 0
        elif dispose == 2:
            canvas = before
    return shown


def _solid(size: int, rgba: tuple[int, int, int, int]) -> np.ndarray:
    out = np.zeros((size, size, 4), np.uint8)
    out[:] = rgba
    return out


RED, GREEN = _solid(32, (255, 0, 0, 255)), _solid(32, (0, 255, 0, 255))
HALF_BLUE, SMALL_GREEN = _solid(10, (0, 0, 255, 128)), _solid(8, (0, 255, 0, 255))
APNG_CASES = {
    # blend OVER a semi-transparent frame; dispose NONE, BACKGROUND, then PREVIOUS after an OVER frame
    "ops": [(RED, 0, 0, 0, 0), (HALF_BLUE, 5, 5, 1, 1), (SMALL_GREEN, 4, 4, 2, 1), (SMALL_GREEN, 20, 20, 0, 0),
            (HALF_BLUE, 0, 0, 0, 1)],
    "previous-first": [(_solid(32, (255, 0, 0, 100)), 0, 0, 2, 0), (SMALL_GREEN, 4, 4, 0, 1),
                       (SMALL_GREEN, 10, 10, 0, 1)],
    "background-then-partial": [(RED, 0, 0, 1, 0), (SMALL_GREEN, 4, 4, 0, 0), (HALF_BLUE, 5, 5, 0, 1)],
}


# -- 2. animated PNG frames composited as the spec says -----------------------------------------------
@pytest.mark.parametrize("name", sorted(APNG_CASES))
def test_animated_png_frames_are_composited_as_the_spec_says(tmp_path, name):
    """Pillow blended a half-transparent frame over the canvas with the wrong weights (159,64,160 for
    127,0,128) and kept the green of an OVER frame disposed to PREVIOUS."""
    frames = APNG_CASES[name]
    decoded = decode_media(_write_apng(tmp_path / f"{name}.png", 32, frames), n_frames=16)
    assert (decoded.kind, decoded.total, decoded.indices) == ("apng", len(frames), list(range(len(frames))))
    for got, want in zip(decoded.frames, _spec_frames(32, frames)):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 2


def test_an_animated_png_beside_its_default_image_leaves_it_out(tmp_path):
    frames = [(GREEN, 0, 0, 0, 0), (HALF_BLUE, 5, 5, 0, 1)]
    decoded = decode_media(_write_apng(tmp_path / "two.png", 32, frames, default=RED), n_frames=16)
    assert (decoded.kind, decoded.total) == ("apng", 2)
    for got, want in zip(decoded.frames, _spec_frames(32, frames)):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 2


def test_animated_png_limits_and_sampling_are_those_of_animations(tmp_path):
    frames = [(_solid(32, (i * 20, 0, 0, 255)), 0, 0, 0, 0) for i in range(10)]
    path = _write_apng(tmp_path / "ten.png", 32, frames)
    decoded = decode_media(path, n_frames=4)
    wanted = evenly_spaced_indices(10, 4)  # as for a GIF or an animated WebP
    assert decoded.indices == wanted and decoded.total == 10
    assert [int(f[0, 0, 0]) for f in decoded.frames] == [i * 20 for i in wanted]
    reach = wanted[-1] + 1  # frames composited to reach the last sample
    for limits, reason in ((MediaLimits(max_frames=9), "too_many_frames"), (MediaLimits(max_pixels=1000), "bomb"),
                           (MediaLimits(max_decode_pixels=32 * 32 * reach - 1), "bomb")):
        with pytest.raises(MediaError) as refused:
            decode_media(path, n_frames=4, limits=limits)
        assert refused.value.reason == reason


# -- 6. one animation frame besides a default image ----------------------------------------------------
def test_a_single_frame_animated_png_shows_its_frame_not_the_default_image(tmp_path):
    """Browsers show the animation frame (green); the default image (red) is for viewers without APNG."""
    decoded = decode_media(_write_apng(tmp_path / "one.png", 32, [(GREEN, 0, 0, 0, 0)], default=RED))
    assert (decoded.kind, decoded.total) == ("image", 1)
    assert decoded.frames[0][5, 5].tolist() == [0, 255, 0]
    still = decode_media(_write_apng(tmp_path / "still.png", 32, [(GREEN, 0, 0, 0, 0)]))  # the frame is the image
    assert (still.kind, still.frames[0][5, 5].tolist()) == ("image", [0, 255, 0])


# -- 3. an animated PNG cached by an earlier version -----------------------------------------------------
def test_only_animated_pngs_are_told_apart_for_their_cache_key(tmp_path):
    _write_apng(tmp_path / "anim.png", 32, APNG_CASES["ops"])
    Image.new("RGB", (8, 8)).save(tmp_path / "still.png")
    assert is_apng(tmp_path / "anim.png")
    assert not is_apng(tmp_path / "still.png") and not is_apng(_jpeg(tmp_path / "a.jpg"))
    pipeline = IngestPipeline(Settings(data_dir=tmp_path / "data"))
    assert pipeline._namespaces(None).frames == pipeline.frames_namespace  # every other file keeps its entries
    assert pipeline._namespaces("apng").frames != pipeline.frames_namespace
    assert pipeline._namespaces("apng").source_key != pipeline._namespaces(None).source_key


@pytest.mark.slow
def test_an_animated_png_cached_as_a_still_before_is_decoded_again(tmp_path, lfw_dir, pipeline_models):
    """Before animated PNG was read, an APNG was cached as one still (its default image), in entries
    keyed by its bytes: they were found again for good, and the APNG stayed a still."""
    photos = [Image.open(_photo(lfw_dir, "Colin_Powell", n)).convert("RGB") for n in (1, 2, 3)]
    folder = tmp_path / "in"
    folder.mkdir()
    anim = folder / "powell.png"
    photos[0].save(anim, save_all=True, append_images=photos[1:], duration=200, loop=0)
    still = folder / "still.png"
    photos[0].save(still)  # what the old decoder made of the APNG: its default image, the first frame
    settings = ingest_settings(tmp_path)
    pipeline = IngestPipeline(settings, **pipeline_models)
    first = ingest([still], settings, pipeline=pipeline)
    assert (first.ingested, first.failed) == (1, 0)
    # the old entries of the APNG: the still's, under the APNG's bytes (the namespaces of round 6)
    old, new = sha256_file(still), sha256_file(anim)
    for namespace in (pipeline.frames_namespace, pipeline._faces_namespace()[0]):
        entry = settings.cache_dir / namespace
        shutil.copytree(entry / old[:2] / old, entry / new[:2] / new)

    summary = ingest([folder], settings, pipeline=IngestPipeline(settings, **pipeline_models))
    assert (summary.ingested, summary.cached, summary.failed) == (1, 1, 0)  # the still PNG keeps its cache
    with session_scope(open_store(settings.resolved_database_url)) as s:
        row = s.scalar(select(Media).where(Media.sha256 == new))
        assert (row.kind, row.total_frames, row.sampled_frames) == ("apng", 3, [0, 1, 2])
    again = ingest([folder], settings, pipeline=IngestPipeline(settings, **pipeline_models))
    assert (again.ingested, again.cached) == (0, 2)


# -- 4. a symlinked folder never wins over the real one --------------------------------------------------
def test_a_folder_is_found_under_its_real_name_not_through_a_link(tmp_path):
    """tree/a/x -> ../b/real: "a" sorts first, so the files were found as tree/a/x/p1.jpg, and a re-run
    rewrote the stored paths and wrote an audit event."""
    tree = tmp_path / "tree"
    real = _jpeg(tree / "b" / "real" / "p1.jpg")
    (tree / "a").mkdir()
    (tree / "a" / "x").symlink_to(Path("..") / "b" / "real")
    outside = _jpeg(tmp_path / "outside" / "o.jpg")
    (tree / "a" / "out").symlink_to(tmp_path / "outside")  # a folder only a link reaches: followed
    assert discover_media([tree]) == [tree / "a" / "out" / "o.jpg", real]
    assert discover_media([tree / "a", tree / "b"]) == [tree / "a" / "out" / "o.jpg", real]
    assert discover_media([tree / "a"]) == [tree / "a" / "out" / "o.jpg", tree / "a" / "x" / "p1.jpg"]
    assert outside.is_file()


# -- 5. the data folder's own output is no media ---------------------------------------------------------
def _data_folder(tmp_path: Path) -> tuple[Settings, Path, Path]:
    settings = Settings(data_dir=tmp_path / "giflens-data")
    upload = _jpeg(settings.data_dir / "uploads" / "0123" / "u.jpg")
    crop = settings.data_dir / "exports" / "2026-12-07T10-00-00" / "raw_dataset" / "Tony_Blair" / "17.jpg"
    crop.parent.mkdir(parents=True)
    crop.write_bytes(b"not a JPEG: without the fix ingest records it as failed, no model needed")
    for extra in ("cache/ns/ab/abcd/face_000.jpg", "models/celebrity/1/x.png", "reports/audit.png", "top.jpg"):
        _jpeg(settings.data_dir / extra)
    return settings, upload, crop


def test_the_data_folder_gives_only_its_uploads(tmp_path):
    settings, upload, crop = _data_folder(tmp_path)
    data = settings.data_dir
    assert discover_media([data], data_dir=data) == [upload]  # named itself
    photos = tmp_path / "photos"
    own = _jpeg(photos / "a.jpg")
    (photos / "data").symlink_to(data)  # reached, here through a link
    (photos / "crops").symlink_to(crop.parent)  # a link into its exports
    assert discover_media([photos], data_dir=data) == [own, photos / "data" / "uploads" / "0123" / "u.jpg"]
    assert discover_media([tmp_path], data_dir=data) == [upload, own]
    assert discover_media([data / "exports"], data_dir=data) == []  # giflens's own output, named or reached: left out


def test_ingesting_the_data_folder_ingests_no_exported_crop(tmp_path):
    settings, upload, crop = _data_folder(tmp_path)
    upload.unlink()  # nothing to ingest: no model is loaded
    summary = ingest([settings.data_dir], settings)
    assert (summary.ingested, summary.failed, summary.failures) == (0, 0, [])
    with session_scope(open_store(settings.resolved_database_url)) as s:
        assert list(s.scalars(select(Media.path))) == []


# -- 1 and 7. a warm re-run: one read of the failed rows, one meta file per item, no write ---------------
def _statements(store) -> list[tuple[str, object]]:
    """Every statement the store's engine runs from now on (SQL, parameters)."""
    seen: list[tuple[str, object]] = []
    event.listen(store.kw["bind"], "before_cursor_execute",
                 lambda conn, cursor, statement, parameters, context, many: seen.append((statement, parameters)))
    return seen


def _meta_reads(pipeline: IngestPipeline) -> list[str]:
    """The cache entries whose meta.json the pipeline reads (a counting wrapper around the real read)."""
    reads: list[str] = []
    read = pipeline.cache.meta

    def counted(namespace: str, sha256: str):
        reads.append(namespace)
        return read(namespace, sha256)

    pipeline.cache.meta = counted
    return reads


@pytest.mark.slow
def test_a_warm_re_run_reads_the_failed_rows_once_and_one_meta_file_per_item(tmp_path, lfw_dir, gifs_dir,
                                                                            pipeline_models):
    """Each warm item asked for a failed row at its path (no index on media.path: 20,000 failed rows made
    a 500-file warm run 7x slower) and read two or three meta.json files."""
    folder = tmp_path / "in"
    folder.mkdir()
    for n in (1, 2, 3):
        shutil.copy(_photo(lfw_dir, "Colin_Powell", n), folder / f"p{n}.jpg")
    shutil.copy(gifs_dir / "jlaw-nods.gif", folder / "nods.gif")
    broken = tmp_path / "broken"
    broken.mkdir()
    for n in range(5):
        (broken / f"bad{n}.gif").write_bytes(b"GIF89a" + bytes([n]) * 20)
    settings = ingest_settings(tmp_path)
    store = open_store(settings.resolved_database_url)
    cold = ingest([folder, broken], settings, pipeline=IngestPipeline(settings, **pipeline_models), store=store)
    assert (cold.ingested, cold.failed) == (4, 5)

    pipeline = IngestPipeline(settings, **pipeline_models)
    statements, reads = _statements(store), _meta_reads(pipeline)
    warm = ingest([folder], settings, pipeline=pipeline, store=store)
    assert (warm.ingested, warm.cached) == (0, 4)
    asking_for_failures = [sql for sql, params in statements if "failed" in (params or ())]
    assert len(asking_for_failures) == 1, asking_for_failures
    assert len(reads) == 4 and set(reads) == {pipeline._faces_namespace()[0]}  # the face count only
    assert not any(sql.startswith("BEGIN IMMEDIATE") for sql, _ in statements)


def _latin1(folder: Path, name: bytes) -> Path:
    return Path(os.fsdecode(bytes(folder) + b"/" + name))


@pytest.mark.slow
def test_a_warm_re_run_takes_no_write_lock_for_a_failure_that_only_reads_like_its_path(
        tmp_path, lfw_dir, pipeline_models):
    """A Latin-1 café.jpg fails and is stored as "caf\\xe9.jpg", the text of a file literally named so
    beside it. The warm path saw "a failed row at my path" without the write path's same-file test,
    and took the write lock to delete nothing on every run."""
    folder = tmp_path / "in"
    folder.mkdir()
    latin1, literal = _latin1(folder, b"caf\xe9.jpg"), folder / "caf\\xe9.jpg"
    shutil.copy(_photo(lfw_dir, "Tony_Blair"), latin1)
    shutil.copy(_photo(lfw_dir, "Colin_Powell"), literal)
    settings = ingest_settings(tmp_path)
    store = open_store(settings.resolved_database_url)
    first = ingest([folder], settings, pipeline=IngestPipeline(settings, **pipeline_models), store=store)
    assert (first.ingested, first.failed) == (1, 1)
    statements = _statements(store)
    warm = ingest([literal], settings, pipeline=IngestPipeline(settings, **pipeline_models), store=store)
    assert (warm.cached, warm.removed) == (1, [])
    assert not any(sql.startswith("BEGIN IMMEDIATE") for sql, _ in statements)
    with session_scope(store) as s:
        assert sorted(s.scalars(select(Media.status))) == ["failed", "ok"]  # the Latin-1 file's failure stays


# -- 8. a GIF ending in an extension, without its trailer ---------------------------------------------------
def test_a_gif_ending_in_a_comment_without_its_trailer_is_used(tmp_path, gifs_dir):
    data = (gifs_dir / "awkward.gif").read_bytes()
    assert data.endswith(b";")
    full = decode_media(gifs_dir / "awkward.gif")
    (tmp_path / "comment.gif").write_bytes(data[:-1] + b"\x21\xfe\x05hello\x00")  # every frame is complete
    cut = decode_media(tmp_path / "comment.gif")
    assert (cut.total, cut.indices) == (full.total, full.indices)
    assert all(np.array_equal(a, b) for a, b in zip(full.frames, cut.frames))
    # a graphic control extension announces one more frame: ending right after it is a cut
    (tmp_path / "announced.gif").write_bytes(data[:-1] + b"\x21\xf9\x04\x00\x0a\x00\x00\x00")
    with pytest.raises(MediaError) as refused:
        scan_gif(tmp_path / "announced.gif", MediaLimits())
    assert refused.value.reason == "truncated"
    (tmp_path / "cut.gif").write_bytes(data[:-1] + b"\x21\xfe\x05hel")  # cut inside the comment
    with pytest.raises(MediaError):
        scan_gif(tmp_path / "cut.gif", MediaLimits())
