"""Videos whose sound runs on past the last frame (trimmed clips, screen recordings).

A WebM or MKV states no video duration, only the whole file's, and that covers the sound too: a
3 s video with 4.2 s of sound was refused as truncated ("the header states 4.21 s but the frames
stop at 3.00 s") although every frame was there. A copy cut short in its bytes must still be refused.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from embeddings.media import MediaError, MediaLimits, _scan_packets, decode_media
from embeddings.sampling import evenly_spaced_indices
from conftest import encoder

FRAMES, RATE = 30, 10  # 3 s of video
SOUND_S = 4.2  # 40% longer than the video
SAMPLE_RATE = 48000

# (file name, video encoders, audio encoders, muxer options): the first encoder the av wheel has is used.
CONTAINERS = {
    "webm": ("clip.webm", ("libvpx-vp9", "libvpx"), ("libopus", "opus"), {}),
    "mkv": ("clip.mkv", ("libx264", "mpeg4"), ("aac",), {}),
    "mp4": ("clip.mp4", ("libx264", "h264", "mpeg4"), ("aac",), {}),
    "fragmented-mp4": ("clip.mp4", ("libx264", "h264", "mpeg4"), ("aac",),
                       {"movflags": "frag_keyframe+empty_moov"}),
}


def _numbered(i: int) -> np.ndarray:
    """Frame i: a brightness that tells its number back through a lossy codec, plus a moving square."""
    frame = np.full((48, 64, 3), 20 + 6 * i, np.uint8)
    frame[16:32, 24 + i // 2:40 + i // 2] = 255
    return frame


def _number_of(frame: np.ndarray) -> int:
    return round((float(frame[:8, :8].mean()) - 20) / 6)


def _video_packets(stream) -> list:
    packets = []
    for i in range(FRAMES):
        packets += stream.encode(av.VideoFrame.from_ndarray(_numbered(i), format="rgb24"))
    return packets + list(stream.encode())


def _sound_packets(stream) -> list:
    """SOUND_S seconds of a quiet 440 Hz tone, in the encoder's frame size."""
    size = stream.codec_context.frame_size or 1024
    total = int(SOUND_S * SAMPLE_RATE)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(total) / SAMPLE_RATE)).astype(np.float32)
    packets = []
    for start in range(0, total, size):
        frame = av.AudioFrame.from_ndarray(tone[None, start:start + size], format=stream.codec_context.format.name,
                                           layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, start
        packets += stream.encode(frame)
    return packets + list(stream.encode())


def _clip_with_longer_sound(folder: Path, kind: str) -> Path:
    """FRAMES frames at RATE fps and SOUND_S seconds of sound, muxed interleaved as recorders write them."""
    name, video_codecs, audio_codecs, options = CONTAINERS[kind]
    path = folder / name
    with av.open(str(path), "w", options=options) as out:
        video = out.add_stream(encoder(*video_codecs), rate=RATE)
        video.height, video.width, video.pix_fmt = 48, 64, "yuv420p"
        sound = out.add_stream(encoder(*audio_codecs), rate=SAMPLE_RATE)
        sound.layout = "mono"
        sound.codec_context.format = "fltp" if "fltp" in [f.name for f in sound.codec.audio_formats] else "flt"
        for packet in _video_packets(video) + _sound_packets(sound):
            out.mux(packet)  # av_interleaved_write_frame puts them in time order
    with av.open(str(path)) as check:
        assert check.duration / 1_000_000 > SOUND_S - 0.1  # the file's duration is the sound's
    return path


@pytest.mark.parametrize("kind", sorted(CONTAINERS))
def test_a_video_whose_sound_runs_on_is_read_whole(tmp_path, kind):
    path = _clip_with_longer_sound(tmp_path, kind)
    decoded = decode_media(path, 8)
    assert decoded.kind == "video" and decoded.total == FRAMES
    assert decoded.indices == evenly_spaced_indices(FRAMES, 8)
    assert [_number_of(f) for f in decoded.frames] == decoded.indices


@pytest.mark.parametrize("kind", ["webm", "mkv", "mp4"])
def test_a_cut_copy_of_it_is_still_truncated(tmp_path, kind):
    """Cut at a third of its bytes, video and sound both stop well short of the stated duration."""
    data = _clip_with_longer_sound(tmp_path, kind).read_bytes()
    cut = tmp_path / f"cut-{CONTAINERS[kind][0]}"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(MediaError) as refused:
        decode_media(cut, 8)
    assert refused.value.reason == "truncated", str(refused.value)


@pytest.mark.parametrize("kind, sound_read", [("mp4", False), ("fragmented-mp4", False), ("mkv", True), ("webm", True)])
def test_the_sound_is_read_only_where_it_can_tell_a_cut_file(tmp_path, kind, sound_read):
    """An MP4, fragmented too, states its video's duration (and frame count, unfragmented), so its sound
    never decides whether it is cut: its packets are left to the demuxer (reading them made a long
    file's probe several times slower). A WebM or MKV states only the whole file's duration: there,
    where the sound reaches (its last packet starts 1024 samples before SOUND_S) is what keeps the clip
    from being refused, so it is read."""
    path = _clip_with_longer_sound(tmp_path, kind)
    with av.open(str(path)) as container:
        scan = _scan_packets(container, container.streams.video[0], path, MediaLimits())
    assert scan.shown == FRAMES
    if sound_read:
        assert scan.others_s == pytest.approx(SOUND_S - 1024 / SAMPLE_RATE, abs=0.05)
    else:
        assert scan.others_s is None
