"""Progress of the long commands the bar misled on or said nothing about:

1. `retrain`'s steps are weighted by time: each epoch a step, the refresh's faces mapped onto the epochs they
   take the time of (a face of the refresh counted as much as an epoch: the bar stood at 0-2% for 98% of
   the run, "~5:16:30 left", then jumped to 100%).
2. `retrain` says its stage ("fitting the centroid classifier", "training the head on the holdout split, epoch
   k/N" ...) in the bar's current field, off a terminal in its status lines, and on the app's bar (it sat at
   `0/N` with no word for 7-18 s).
3. The CSV imports, `audit` and `dupes` ran under console.status: nothing at all off a terminal. Their status
   now reaches a log as plain lines: `import classes 0:00:10 elapsed: importing classes from x.csv`.
4. A task with no count yet but a word of what it does (`export`'s "reading the store and drawing the split")
   gets its status lines too, with no "0/?".
5. `export --verify` (and the app's Verify) count the files hashed.

Stores are real SQLite stores of a few dozen faces with synthetic embeddings (`small_store`): each retrain
takes well under a second. The status-line pace is shortened below its 1-second floor by replacing
`_status_every` (the settings reader), so a sub-second command writes its lines."""
from __future__ import annotations

import io
import itertools
import json
import re
import time
from pathlib import Path

import pytest
from test_retrain_seeds_and_divergence import small_store
from typer.testing import CliRunner

import labeling.cli as cli
from embeddings.cache import sha256_file
from labeling.export import verify_export
from labeling.recognition import retrain

runner = CliRunner()
pytestmark = pytest.mark.filterwarnings("ignore::models.celebrity_classifier.CalibrationWarning")
ELAPSED = r"\d+:\d\d:\d\d elapsed"


def invoke(*args: object):
    return runner.invoke(cli.app, [str(a) for a in args])


@pytest.fixture
def fast_status_lines(monkeypatch):
    """Status lines every 10 ms off a terminal (the setting's floor is a second)."""
    monkeypatch.setattr(cli, "_status_every", lambda: 0.01)


# -- 1 and 2. retrain: steps weighted by time, the stage said ------------------------------------------------
def test_a_realistic_refresh_is_a_small_share_of_the_bar():
    """The audit's store: 4,048 confirmed faces, 2,072 undecided and 15 tracks, 40 epochs. The refresh took
    under a second of a minute's run; it was 2,087 of 2,169 steps."""
    from labeling.recognition import retrain_steps

    trained, refresh = retrain_steps(40, 4048, 2072 + 15)
    assert trained == 2 * 40 + 2 and refresh / (trained + refresh) < 0.05
    assert retrain_steps(40, 4048, 0) == (82, 1)  # nothing to refresh: still one step, done at the end
    assert retrain_steps(3, 18, 6) == (8, 1)  # the store below: an epoch costs at least 1,000 faces' time
    # few confirmed faces, thousands undecided (the first retrains): the refresh (a second of ten) never
    # outweighs the trainings, as it did at 2,495 of 2,577 steps
    trained, refresh = retrain_steps(40, 12, 5988)
    assert refresh <= trained and refresh / (trained + refresh) < 0.3


def test_retrain_says_each_stage_with_the_count_it_is_at(tmp_path):
    store, _, _ = small_store(tmp_path)  # 18 confirmed faces, 6 undecided, no track
    events: list[object] = []
    retrain(store, tmp_path / "data", epochs=3, holdout_share=0.34,
            on_progress=lambda d, t: events.append((d, t)), on_step=events.append)
    said = [e for e in events if isinstance(e, str)]
    assert said == ["reading the store", "fitting the centroid classifier on the training split",
                    *(f"training the head on the holdout split, epoch {k}/3" for k in (1, 2, 3)),
                    "scoring both models on the holdout split",
                    "refitting the centroid classifier on all confirmed labels",
                    *(f"refitting the head on all confirmed labels, epoch {k}/3" for k in (1, 2, 3)),
                    "saving both models", "predicting the 6 undecided faces"]
    counts = [e for e in events if isinstance(e, tuple)]
    assert {t for _, t in counts} == {8 + 1}  # 2 x 3 epochs + 2, then the refresh's step
    done = [d for d, _ in counts]
    assert done == sorted(done) and done[-1] == 9

    def count_when(text: str) -> int:  # the count the bar showed as `text` was said
        before = events[:events.index(text)]
        return next((e[0] for e in reversed(before) if isinstance(e, tuple)), 0)

    assert [count_when(f"training the head on the holdout split, epoch {k}/3") for k in (1, 2, 3)] == [0, 1, 2]
    assert [count_when(f"refitting the head on all confirmed labels, epoch {k}/3") for k in (1, 2, 3)] == [4, 5, 6]
    assert count_when("predicting the 6 undecided faces") == 8  # training: 8 of the 9 steps


def test_retrain_off_a_terminal_says_its_stage_in_its_status_lines(tmp_path, fast_status_lines):
    _, url, _ = small_store(tmp_path)
    result = invoke("retrain", "--data-dir", tmp_path / "data", "--database-url", url, "--epochs", "3",
                    "--holdout", "0.34")
    assert result.exit_code == 0, result.output
    staged = [line for line in result.stderr.splitlines()
              if re.fullmatch(rf"retrain( \d+/(\?|10))? {ELAPSED}(, ~.* left)?: .+", line)]
    assert staged, result.stderr
    assert result.stdout.splitlines()[-1].startswith("classes=3 ")  # the summary stays the last line


# -- 3. the CSV imports' status reaches a log --------------------------------------------------------------
def test_import_classes_off_a_terminal_writes_status_lines(tmp_path, shared_data, fast_status_lines):
    rows = (shared_data / "giphy-celebrities.csv").read_text(encoding="utf-8").splitlines()[:301]
    csv = tmp_path / "giphy300.csv"
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = invoke("import", "classes", csv, "--data-dir", tmp_path / "data")
    assert result.exit_code == 0, result.output
    pattern = rf"import classes( \d+/300)? {ELAPSED}(, ~.* left)?: importing classes from giphy300\.csv"
    assert any(re.fullmatch(pattern, line) for line in result.stderr.splitlines()), result.stderr
    assert "0/?" not in result.stderr and result.stdout.strip().startswith("import classes from giphy300.csv: 300 classes")


# -- 4. a task with a word but no count yet --------------------------------------------------------------
def test_a_task_with_no_count_but_a_word_gets_status_lines():
    """A clock 5 s later at each reading: the first line is due at once, without waiting seconds for it."""
    from rich.console import Console
    from rich.progress import Progress

    out = io.StringIO()
    clock = itertools.count(0.0, 5.0)
    progress = Progress(console=Console(file=out, force_terminal=False), get_time=lambda: next(clock))
    progress.add_task("export", total=None, current="reading the store and drawing the split")
    lines = cli._StatusLines(progress, 1.0)
    lines.start()
    for _ in range(100):  # the loop wakes every third of a second
        if out.getvalue():
            break
        time.sleep(0.05)
    lines.stop()
    first = out.getvalue().splitlines()[0] if out.getvalue() else ""
    assert re.fullmatch(rf"export {ELAPSED}: reading the store and drawing the split", first), out.getvalue()


# -- 5. export --verify counts the files it hashes -------------------------------------------------------
def a_small_export(folder: Path) -> Path:
    """An export's shape for verify_export: files and a manifest.json listing their sha256."""
    for rel in ("labels.csv", "raw_dataset/A/1.jpg", "raw_dataset/B/2.jpg"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(rel.encode())
    files = {p.relative_to(folder).as_posix(): sha256_file(p) for p in folder.rglob("*") if p.is_file()}
    (folder / "manifest.json").write_text(json.dumps({"files": files}), encoding="utf-8")
    return folder


def test_verify_export_counts_the_files_hashed(tmp_path):
    folder = a_small_export(tmp_path / "export")
    seen: list[tuple[int, int]] = []
    assert verify_export(folder, on_progress=lambda d, t: seen.append((d, t))) == []
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]
    (folder / "raw_dataset" / "A" / "1.jpg").write_bytes(b"changed")
    assert verify_export(folder) == ["raw_dataset/A/1.jpg: sha256 differs"]  # on_progress is optional


def test_export_verify_draws_a_bar_of_the_files_hashed(tmp_path):
    folder = a_small_export(tmp_path / "export")
    result = invoke("export", folder, "--verify")
    assert result.exit_code == 0, result.output
    assert re.match(r"verify\b.* 3/3 ", result.stderr), result.stderr  # drawn once as it stopped, off a terminal
    assert result.stdout.strip() == f"export {folder} verified: 3 files match manifest.json"


def test_a_long_stage_text_is_cut_before_the_count_and_times():
    """A log is drawn 80 wide: the stage text "training the head on the holdout split, epoch 19/100" squeezed
    the count to "1…" and the times to "0:…"; the text is now what gets cut."""
    from rich.console import Console

    from labeling.cli import progress_bar

    bar = progress_bar()
    task = bar.add_task("retrain", total=205, current="training the head on the holdout split, epoch 19/100")
    bar.update(task, completed=18)
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(bar.make_tasks_table(bar.tasks))
    shown = out.getvalue()
    assert "18/205" in shown and "0:00:00" in shown and "…" in shown and shown.rstrip().endswith(", epoch 19/100"), shown
    assert len(shown.rstrip("\n")) <= 80, shown
