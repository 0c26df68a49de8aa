"""`giflens dupes` defects, each failing without its fix: copies with one file name in
two folders printed alike, and a file overwritten with other content and ingested again still paired as
its old content."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from labeling.cli import app
from labeling.cli_dupes import dupes_names, replaced_on_disk

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "gifs"


def test_dupes_names_tell_files_of_one_name_apart():
    names = dupes_names({1: "/x/gifs/bender.gif", 2: "/x/other/bender.gif", 3: "/y/a.gif",
                         4: "/x/deep/er/bender.gif"})
    assert names == {1: "gifs/bender.gif", 2: "other/bender.gif", 3: "a.gif", 4: "deep/er/bender.gif"}
    assert dupes_names({1: "/a/x.gif", 2: "/a/x.gif"}) == {1: "x.gif", 2: "x.gif"}  # one path: replaced_on_disk says


def test_replaced_on_disk_marks_the_rows_whose_bytes_the_file_no_longer_holds(tmp_path):
    from embeddings.cache import sha256_file

    f, g = tmp_path / "b.gif", tmp_path / "c.gif"
    f.write_bytes(b"new content")
    g.write_bytes(b"only")
    rows = [(1, str(f), "0" * 64), (2, str(f), sha256_file(f)), (3, str(g), sha256_file(g)),
            (4, str(tmp_path / "gone.gif"), "1" * 64), (5, str(tmp_path / "gone.gif"), "2" * 64)]
    assert replaced_on_disk(rows) == {1}  # a path held by one row is not hashed; a file gone proves nothing


def _requantised(src: Path, dst: Path) -> Path:
    frames = []
    with Image.open(src) as im:
        for i in range(getattr(im, "n_frames", 1)):
            im.seek(i)
            frames.append(im.convert("RGB").quantize(colors=32))
    dst.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(dst, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return dst


@pytest.mark.slow
def test_dupes_on_a_store_names_copies_apart_and_marks_a_replaced_file(tmp_path):
    """A re-encode in one folder and the original under the same name in another: the pair names both
    folders. Then the original's file is overwritten with another clip and ingested again: its old row
    still pairs, and is marked as no longer what the file holds."""
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "data")]
    small, other = sorted(SHARED.glob("*.gif"), key=lambda p: p.stat().st_size)[:2]
    a = _requantised(small, tmp_path / "one" / "clip.gif")
    b = tmp_path / "two" / "clip.gif"
    b.parent.mkdir()
    b.write_bytes(small.read_bytes())
    assert runner.invoke(app, ["ingest", str(a), str(b), *data]).exit_code == 0
    result = runner.invoke(app, ["dupes", *data])
    assert result.exit_code == 0, result.output
    pairs = [line.split()[-2:] for line in result.stdout.splitlines()[1:-1]]
    assert pairs == [["one/clip.gif", "two/clip.gif"]], result.stdout

    b.write_bytes(other.read_bytes())
    assert runner.invoke(app, ["ingest", str(b), *data]).exit_code == 0
    result = runner.invoke(app, ["dupes", *data])
    assert result.exit_code == 0, result.output
    assert "two/clip.gif (replaced on disk)" in result.stdout, result.stdout
