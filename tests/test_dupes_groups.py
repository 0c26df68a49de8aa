"""`giflens dupes --groups`: the copies of one clip on one line, not one row per pair."""
from __future__ import annotations

import pytest
from test_cli_dupes_names_and_replaced_files import SHARED, _requantised
from typer.testing import CliRunner

from labeling.cli import app
from labeling.cli_dupes import media_groups


def test_media_groups_are_connected_components_with_identical_copies_alone_too():
    pairs = [(1, 2, 4, 0), (2, 3, 4, 2), (5, 6, 1, 3)]  # (media_a, media_b, frames, distance)
    assert media_groups([(7, "/x/copy.gif")], pairs) == [[1, 2, 3], [5, 6], [7]]
    assert media_groups([], []) == []


@pytest.mark.slow
def test_dupes_groups_names_every_copy_of_a_clip_on_one_line(tmp_path):
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "data")]
    small = sorted(SHARED.glob("*.gif"), key=lambda p: p.stat().st_size)[0]
    a = _requantised(small, tmp_path / "one" / "clip.gif")  # a re-encode
    b = tmp_path / "two" / "clip.gif"
    b.parent.mkdir()
    b.write_bytes(small.read_bytes())
    c = tmp_path / "two" / "same.gif"  # the same bytes as b: one media item, two names
    c.write_bytes(small.read_bytes())
    assert runner.invoke(app, ["ingest", str(a), str(b), str(c), *data]).exit_code == 0
    result = runner.invoke(app, ["dupes", "--groups", *data])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("group 1: 2 media, 3 names, distance 0-"), result.stdout
    assert all(name in lines[0] for name in ("one/clip.gif", "two/clip.gif", "same.gif")), lines[0]
    assert lines[-1].endswith(" identical_pairs=1 groups=1"), lines[-1]
    plain = runner.invoke(app, ["dupes", *data]).stdout.splitlines()
    assert len(plain) == 4 and "groups=" not in plain[-1]  # header, the identical copy, the re-encode, summary
