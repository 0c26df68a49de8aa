"""Video probe: the frame count and the constant rate come from the packets' timestamps.

Seeking was kept only for files whose header count matched duration x rate, so every WebM, MKV and
fragmented MP4 (no count in the header) and every MP4 trimmed by stream copy (its count includes the
frames an edit list hides) was decoded in one pass: a 10-minute 640x360 WebM took 5-12 s instead of
about 1. A trimmed file's total also counted the hidden frames (17,750 for 17,670 shown).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from test_ingest_robustness import write_timed_video
from test_ingest_vfr_frames_and_copies import number_shown, numbered_frame
from embeddings import media
from embeddings.media import MediaLimits, _probe_video, decode_media, grid_rate

BITS = 15  # a frame shows its own number as 15 blocks of 16 x 12 px, white for a 1 bit (5 x 3 of them)
WIDTH, HEIGHT = 80, 36


def _numbered(i: int) -> np.ndarray:
    return numbered_frame(i, BITS, 16, 12)


def _number_of(frame: np.ndarray) -> int:
    return number_shown(frame, BITS, 16, 12)


def _constant_rate_video(path: Path, n: int, codec: str, options: dict[str, str],
                         container_options: dict[str, str] | None = None) -> Path:
    """n frames at 30 fps, frame i showing number i."""
    with av.open(str(path), "w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = options
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_numbered(i), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


X264 = {"preset": "ultrafast", "crf": "10", "g": "30"}


def _trimmed(source: Path, path: Path, cut: int) -> Path:
    """A stream-copy trim starting at frame `cut` (as `ffmpeg -ss ... -c copy` and phones' editors write it):
    the packets from the keyframe before the cut are kept with negative timestamps, which the MP4 muxer
    hides behind an edit list, so the header counts frames that are never shown."""
    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        stream = src.streams.video[0]
        copy = out.add_stream_from_template(stream)
        step = int(1 / (stream.guessed_rate * stream.time_base))
        packets = [p for p in src.demux(stream) if p.size]
        keyframe = max(i for i, p in enumerate(packets) if p.is_keyframe and p.pts <= cut * step)
        assert keyframe < cut  # some frames are hidden
        for packet in packets[keyframe:]:
            packet.pts -= cut * step
            packet.dts -= cut * step
            packet.stream = copy
            out.mux(packet)
    return path


def _sequential_decode_forbidden(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("decoded in one pass, not by seeking")

    monkeypatch.setattr(media, "_decode_video_sequentially", refuse)


@pytest.fixture(scope="module")
def long_webm(tmp_path_factory) -> Path:
    """4,800 frames: 16 samples are 300 apart (SEEK_MIN_GAP), so they are sought when the rate is constant."""
    return _constant_rate_video(tmp_path_factory.mktemp("webm") / "long.webm", 4800, "libvpx-vp9",
                                {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "1M", "g": "60"})


def test_a_constant_rate_webm_is_sampled_by_seeking(long_webm, monkeypatch):
    """WebM states no frame count: the old probe never called it constant-rate and decoded all 4,800 frames."""
    probe = _probe_video(long_webm, MediaLimits())
    assert probe.constant_rate and probe.total == 4800 and probe.rate == 30
    _sequential_decode_forbidden(monkeypatch)
    decoded = decode_media(long_webm, 16)
    assert decoded.total == 4800 and len(decoded.indices) == 16
    assert [_number_of(f) for f in decoded.frames] == decoded.indices


def test_a_constant_rate_fragmented_mp4_is_sampled_by_seeking(tmp_path, monkeypatch):
    path = _constant_rate_video(tmp_path / "frag.mp4", 700, "libx264", X264,
                                {"movflags": "frag_keyframe+empty_moov"})
    probe = _probe_video(path, MediaLimits())
    assert probe.constant_rate and probe.total == 700
    _sequential_decode_forbidden(monkeypatch)
    decoded = decode_media(path, 2)
    assert decoded.total == 700 and [_number_of(f) for f in decoded.frames] == decoded.indices == [175, 525]


def test_a_trimmed_mp4_counts_its_shown_frames_and_is_sampled_by_seeking(tmp_path, monkeypatch):
    """The edit list hides the frames from the keyframe before the cut: they are neither counted nor
    numbered, and the frame shown first is frame 0 (it shows number 110 of the source)."""
    source = _constant_rate_video(tmp_path / "source.mp4", 710, "libx264", X264)
    path = _trimmed(source, tmp_path / "trim.mp4", 110)
    with av.open(str(path)) as check:
        assert check.streams.video[0].frames > 600  # the header counts the hidden frames too
    probe = _probe_video(path, MediaLimits())
    assert probe.total == 600 and probe.constant_rate
    _sequential_decode_forbidden(monkeypatch)
    decoded = decode_media(path, 2)
    assert decoded.total == 600 and decoded.indices == [150, 450]
    assert [_number_of(f) - 110 for f in decoded.frames] == decoded.indices


def test_a_variable_frame_rate_webm_is_not_sought_and_keeps_its_numbers(tmp_path, monkeypatch):
    """Timestamps off one grid (33 ms, then 66 ms) are read in one pass, numbered as they come."""
    steps = [33] * 400 + [66] * 400
    path = write_timed_video(tmp_path / "vfr.webm", "libvpx-vp9", 30, [_numbered(i) for i in range(len(steps))],
                             steps, {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "1M"})
    probe = _probe_video(path, MediaLimits())
    assert not probe.constant_rate and probe.total == 800

    def refuse(*args, **kwargs):
        raise AssertionError("a variable-rate file was sought")

    monkeypatch.setattr(media, "_decode_video_by_seeking", refuse)
    decoded = decode_media(path, 2)
    assert decoded.total == 800 and [_number_of(f) for f in decoded.frames] == decoded.indices == [200, 600]


def test_grid_rate_checks_every_timestamp():
    ms = Fraction(1, 1000)
    rounded = [round(i * 1000 / 30) for i in range(1000)]  # a WebM's millisecond ticks at 30 fps
    assert grid_rate(rounded, ms, [Fraction(30)]) == 30
    assert grid_rate(rounded, ms, [None, Fraction(25)]) == 30  # the rate the timestamps span
    ntsc = [i * 1001 for i in range(500)]
    assert grid_rate(ntsc, Fraction(1, 30000), [None]) == Fraction(30000, 1001)
    assert grid_rate(rounded[:500] + [rounded[499] + 66 * (i + 1) for i in range(500)], ms, [Fraction(30)]) is None
    assert grid_rate(rounded[:600] + rounded[601:], ms, [Fraction(30)]) is None  # one frame missing
    assert grid_rate([0, 33, 33, 100], ms, [Fraction(30)]) is None  # two frames at one time
    assert grid_rate([5], ms, [Fraction(30)]) is None


def test_the_frame_limit_counts_the_hidden_frames_of_a_trimmed_mp4(tmp_path):
    """A stream-copy trim of a one-keyframe clip: 300 frames hidden by the edit list, 10 shown. The
    decoder decodes all 310, so the limit counts them; counting only the shown 10 let it through."""
    source = _constant_rate_video(tmp_path / "onegop.mp4", 310, "libx264", {"preset": "ultrafast", "g": "1000"})
    path = _trimmed(source, tmp_path / "trim.mp4", 300)
    with pytest.raises(media.MediaError) as refused:
        decode_media(path, 4, MediaLimits(max_frames=200))
    assert refused.value.reason == "too_many_frames"
    assert ": 310 frames stored (300 of them hidden lead-in frames" in str(refused.value)
    with pytest.raises(media.MediaError) as refused:  # the scan stops at twice the limit
        decode_media(path, 4, MediaLimits(max_frames=100))
    assert "more than 100 frames stored (at least 201 of them hidden" in str(refused.value)
    assert decode_media(path, 4, MediaLimits(max_frames=400)).total == 10


def _cut_mid_gop(source: Path, path: Path, first: int, n: int) -> Path:
    """Packets first .. first + n - 1 of `source` (no B-frames), timestamps from 0: a clip cut mid-GOP
    by stream copy, whose leading frames reference a keyframe that is gone."""
    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        stream = src.streams.video[0]
        copy = out.add_stream_from_template(stream)
        packets = [p for p in src.demux(stream) if p.size][first : first + n]
        base = packets[0].pts
        for packet in packets:
            packet.pts -= base
            packet.dts -= base
            packet.stream = copy
            out.mux(packet)
    return path


def test_a_clip_cut_mid_gop_is_read_and_numbered_as_seeking_numbers_it(tmp_path):
    """Cut 12 frames before a keyframe, the decoder drops those 12. All packets are there, so this is no
    truncated file (it was refused as one: 90 frames held, 78 decoded); frames are numbered by their
    timestamps, as a seek numbers them, so the frame shown first is number 12, not 0."""
    source = _constant_rate_video(tmp_path / "source.mkv", 150, "libx264", {**X264, "bf": "0"})
    path = _cut_mid_gop(source, tmp_path / "midgop.mkv", 18, 90)  # keyframes at 0, 30, 60...
    decoded = decode_media(path, 8)
    assert decoded.total == 90 and len(decoded.indices) == 8
    assert decoded.indices[0] == 12  # frame 5, the first wanted, is one the decoder drops
    assert [_number_of(f) - 18 for f in decoded.frames] == decoded.indices


def test_a_variable_rate_clip_cut_mid_gop_counts_the_frames_it_shows(tmp_path):
    """Off any grid, frames are numbered as they come: the 12 the decoder drops are not counted."""
    steps = [33] * 60 + [66] * 60
    source = write_timed_video(tmp_path / "vfr.mkv", "libx264", 30, [_numbered(i) for i in range(len(steps))],
                               steps, {**X264, "bf": "0"})
    path = _cut_mid_gop(source, tmp_path / "midgop.mkv", 18, 100)
    decoded = decode_media(path, 8)
    assert decoded.total == 88
    assert [_number_of(f) - 30 for f in decoded.frames] == decoded.indices


def test_a_clip_whose_timestamps_start_late_is_not_truncated(tmp_path):
    """Timestamps from 30 s: the MKV states 32 s from time 0, which the frames reach; measured from the
    first frame (2 s) it was refused as truncated."""
    source = _constant_rate_video(tmp_path / "source.mkv", 60, "libx264", X264)
    path = tmp_path / "offset30.mkv"
    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        stream = src.streams.video[0]
        copy = out.add_stream_from_template(stream)
        offset = int(30 / stream.time_base)
        for packet in src.demux(stream):
            if packet.size:
                packet.pts += offset
                packet.dts += offset
                packet.stream = copy
                out.mux(packet)
    decoded = decode_media(path, 4)
    assert decoded.total == 60
    assert [_number_of(f) for f in decoded.frames] == decoded.indices


def test_a_webm_whose_header_states_no_length_stores_how_long_its_frames_play(tmp_path):
    """A WebM written live (as a browser's MediaRecorder or a pipe writes it) has no duration in its header:
    the clip's length came out None though its frames' timestamps show 10 s. A normal one keeps its own."""
    vp9 = {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "1M", "g": "30"}
    live = _constant_rate_video(tmp_path / "live.webm", 300, "libvpx-vp9", vp9, {"live": "1"})
    with av.open(str(live)) as check:
        assert check.duration is None and not check.streams.video[0].duration  # nothing stated
    assert decode_media(live, 4).duration == pytest.approx(10.0, abs=0.05)
    normal = _constant_rate_video(tmp_path / "normal.webm", 300, "libvpx-vp9", vp9)
    assert decode_media(normal, 4).duration == pytest.approx(10.0, abs=0.05)
