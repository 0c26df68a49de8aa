"""Ingest progress: `giflens ingest` sat at 0/N (time left -:--:--) while the first chunk was read
and the models loaded, then jumped a chunk at a time, its time left misleading ("8/63 ... 0:00:01").

1. The pipeline tells `on_read(path, batch)` of each file once, as soon as it is read (decoded, answered
   from the cache, or failed), before its chunk's results; `on_result` still comes once per file.
2. The ingest command's bar says what goes on between results (the file read, the files going through
   the networks), its count moving only per file stored.
3. Its time left stays "-:--:--" until a tenth of the files are done, then the run's average pace.
"""
from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

from rich.console import Console

from conftest import ingest_settings
from embeddings.pipeline import IngestPipeline
from labeling.cli import _IngestProgress, progress_bar
from labeling.ingest import ingest

SMALL = ("calvin-hobbes-dont-knock-smock-1.gif", "calvin-hobbes-dont-knock-smock-2.gif")


def _folder(tmp_path: Path, gifs_dir: Path) -> tuple[Path, Path, Path]:
    """Two small GIFs and a file that is no GIF, in a folder of the test's own."""
    folder = tmp_path / "in"
    folder.mkdir()
    first, second = (Path(shutil.copy(gifs_dir / name, folder / name)) for name in SMALL)
    bad = folder / "bad.gif"
    bad.write_text("not a GIF\n")
    return first, second, bad


# -- 1. the pipeline: each file read, once, before its chunk's results ------------------------------------

def test_on_read_is_told_of_every_file_before_its_chunks_results(tmp_path, gifs_dir, pipeline_models):
    first, second, bad = _folder(tmp_path, gifs_dir)
    settings = ingest_settings(tmp_path).model_copy(update={"frames": 4})
    pipeline = IngestPipeline(settings, chunk_size=3, **pipeline_models)
    list(pipeline.run([first]))  # its entries cached: the next run answers it from the cache

    missing = tmp_path / "in" / "gone.gif"
    paths = [first, bad, second, missing, second]  # cached, failed, decoded; then a missing file and a copy
    events: list[tuple] = []
    results = list(pipeline.run(paths, on_result=lambda r: events.append(("result", r.path)),
                                on_read=lambda p, batch: events.append(("read", p, batch))))

    assert [r.status for r in results] == ["ok", "failed", "ok", "failed", "ok"]
    assert results[0].from_cache and not results[2].from_cache
    # chunk 1 (first, bad, second): all three read, the one decoded file then goes through the networks
    # (told with the last read), then the three results; chunk 2 likewise, nothing to infer there
    assert events == [("read", first, 0), ("read", bad, 0), ("read", second, 1),
                      ("result", first), ("result", bad), ("result", second),
                      ("read", missing, 0), ("read", second, 0),
                      ("result", missing), ("result", second)]


# -- 2. the ingest command's bar, through a real ingest -----------------------------------------------------

def _wide() -> Console:
    return Console(file=io.StringIO(), width=250, color_system=None, record=True)


def _render(progress) -> str:
    out = _wide()
    out.print(progress.get_renderable())
    return out.export_text().strip()


def _time_left(line: str) -> str:
    """The time-left column: the token after the count and the elapsed time (the bar before the count may
    draw nothing this early)."""
    return re.search(r" \d+/\d+ (\S+) (\S+)", line).group(2)


def test_the_ingest_bar_says_what_goes_on_between_results(tmp_path, gifs_dir, pipeline_models):
    first, second, bad = _folder(tmp_path, gifs_dir)
    settings = ingest_settings(tmp_path).model_copy(update={"frames": 4})
    progress = progress_bar(_wide())  # the command's own columns, rendered here rather than live on stderr
    task = progress.add_task("ingest", total=None, current="")
    bar = _IngestProgress(progress, task)
    shown: list[str] = []

    def on_read(path: Path, batch: int) -> None:
        bar.on_read(path, batch)
        shown.append(_render(progress))

    def on_result(result) -> None:
        bar.on_result(result)
        shown.append(_render(progress))

    summary = ingest([tmp_path / "in"], settings, on_start=bar.on_start, on_read=on_read, on_result=on_result,
                     pipeline=IngestPipeline(settings, **pipeline_models))
    assert (summary.ingested, summary.failed) == (2, 1)
    # discovery sorts the folder: bad.gif, then the two GIFs; all three read before any is done
    assert len(shown) == 6 and all(" 0/3 " in line for line in shown[:3]), shown
    assert shown[0].endswith("read 1 of 3: bad.gif")
    assert shown[1].endswith(f"read 2 of 3: {SMALL[0]}")
    assert shown[2].endswith("loading models, then detecting faces in 2 files")  # the last read, then inference
    assert [line.split()[2] for line in shown[3:]] == ["1/3", "2/3", "3/3"]  # one step per file stored
    assert shown[-1].endswith(SMALL[1])


# -- 3. time left: none until a tenth is done, then the run's average pace ------------------------------------

def test_time_left_waits_for_a_tenth_of_the_files_then_follows_the_average_pace():
    clock = [0.0]
    progress = progress_bar(_wide())
    progress.get_time = lambda: clock[0]
    task = progress.add_task("ingest", total=None, current="")
    bar = _IngestProgress(progress, task)
    bar.on_start(63)  # a tenth: 6 files

    class Result:
        path = Path("a.gif")

    clock[0] = 45.0  # the first chunk's results, a burst after the models loaded and it went through them
    for done in range(1, 9):
        clock[0] += 0.001
        bar.on_result(Result())
        left = _time_left(_render(progress))
        if done < 6:  # rich's recent speed said 0:00:01 here (a file a millisecond)
            assert left == "-:--:--", (done, left)
    # 8 done in 45 s: 55 more at that pace, about 5 minutes (not 1 second)
    assert left == "0:05:09"
