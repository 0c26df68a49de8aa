"""The long CLI steps that showed only a spinner: their count, Ctrl-C in them, and their status text's width.

1. The CSV imports (`import classes`, `import attributes`, `import tags` CSV and .jsonl) count the file's
   lines on a bar (`status_task` turns into the commands' bar once the importer reports a total): a
   2,306-line class import sat for seconds under a spinner saying nothing of how far it was. Off a
   terminal the bar is drawn once as it stops, `import classes ... 2306/2306 ...`.
2. `dupes` counts the passes of its near-duplicate search (`MultiIndexHash.pairs`, the slow part).
3. Ctrl-C or SIGTERM during an import: `interrupted: nothing imported ...` and exit 130 or 143, as an
   interrupted ingest says what it kept (it was click's "Aborted!", exit 1); and it is true: the store
   holds no class and no audit event afterwards (the import is one transaction).
4. A status's text is cut to the width, as the bar's stage text is, not wrapped onto a second line.
5. A refused import leaves its error as the last line (its bar, with a count by then, was drawn below it).
6. The tags imports count their write too (`TAG_WRITE_STEPS`): it takes most of their time, and the bar said
   N/N, its elapsed time stopped and "~0:00:00 left", while it ran.
7. Ctrl-C landing after an import's COMMIT and before the importer returns says what the store kept (it said
   "nothing imported ... rolled back").

Real data from ../shared/data: GIPHY's class list, the LFW people roster, the GIFs' uploader tags, LFW photos
as media rows (conftest's `photo_faces`) for dupes."""
from __future__ import annotations

import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import photo_faces
from typer.testing import CliRunner

import labeling.cli as cli
from embeddings.near_duplicates import near_duplicate_media

ROOT = Path(__file__).resolve().parents[1]
GIFLENS = str(Path(sys.executable).with_name("giflens"))
runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(cli.app, [str(a) for a in args])


def bar_line(stderr: str, description: str) -> str:
    """The bar as drawn once when it stopped (off a terminal): the line starting with the step's name and
    holding a count."""
    lines = [line for line in stderr.splitlines() if line.startswith(description + " ") and re.search(r" \d+/\d+ ", line)]
    assert lines, stderr
    return lines[-1]


# -- 1. the imports count their lines -----------------------------------------------------------------------
def test_import_classes_counts_the_lines_of_the_class_list(tmp_path, shared_data):
    result = invoke("import", "classes", shared_data / "giphy-celebrities.csv", "--data-dir", tmp_path / "data")
    assert result.exit_code == 0, result.output
    assert " 2306/2306 " in bar_line(result.stderr, "import classes")
    assert result.stdout.strip().startswith("import classes from giphy-celebrities.csv: 2306 classes created")


def test_import_attributes_counts_the_roster_lines(tmp_path, shared_data):
    result = invoke("import", "attributes", shared_data / "lfw-people.csv", "--data-dir", tmp_path / "data")
    assert result.exit_code == 0, result.output
    assert " 423/423 " in bar_line(result.stderr, "import attributes")
    assert result.stdout.strip().splitlines()[-1].startswith("import attributes from lfw-people.csv: ")


def test_import_tags_counts_the_lines_of_the_csv_and_of_a_tag_dataset(tmp_path, shared_data):
    data = tmp_path / "data"
    result = invoke("import", "tags", shared_data / "gifs.csv", "--data-dir", data)
    assert result.exit_code == 0, result.output
    assert " 65/65 " in bar_line(result.stderr, "import tags")  # the 63 lines, then the write's 2 steps
    rows = [line.split(",", 1) for line in (shared_data / "gifs.csv").read_text(encoding="utf-8").splitlines()[1:]]
    dataset = tmp_path / "tags.jsonl"
    dataset.write_text("".join(json.dumps({"media": file, "tags": [[t, 0.9] for t in tags.split(";") if t]}) + "\n"
                               for file, tags in rows), encoding="utf-8")
    result = invoke("import", "tags", dataset, "--data-dir", data)
    assert result.exit_code == 0, result.output
    assert f" {len(rows) + 2}/{len(rows) + 2} " in bar_line(result.stderr, "import tags")


# -- 2. dupes counts its search's passes -----------------------------------------------------------------------
def test_near_duplicate_media_reports_its_passes_and_finds_the_same_pairs():
    hashes = {m: [f"{(0x5A5A5A5A5A5A5A5A ^ (m * 0x1F3D5B79)) & (2**64 - 1):016x}"] for m in range(3000)}
    hashes[3000] = [hashes[7][0][:-1] + ("0" if hashes[7][0][-1] != "0" else "1")]  # a copy a bit or two apart
    seen: list[tuple[int, int]] = []
    found = near_duplicate_media(hashes, radius=4, on_progress=lambda d, t: seen.append((d, t)))
    assert found == near_duplicate_media(hashes, radius=4)
    assert seen and seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_dupes_counts_the_search_on_a_bar(tmp_path, lfw_dir):
    from labeling.db import open_store

    data = tmp_path / "data"
    data.mkdir()
    store = open_store(f"sqlite:///{data / 'giflens.db'}")
    photo_faces(store, data, lfw_dir / "George_W_Bush", 40)
    result = invoke("dupes", "--data-dir", data)
    assert result.exit_code == 0, result.output
    done, total = re.search(r" (\d+)/(\d+) ", bar_line(result.stderr, "dupes")).groups()
    assert done == total and int(total) > 0
    assert result.stdout.strip().endswith("media=40 frames=40 radius=6")


# -- 3. Ctrl-C or SIGTERM during an import ---------------------------------------------------------------------
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_import_says_nothing_was_imported_and_nothing_was(tmp_path, shared_data, signum, code):
    """Sent once a status line shows the count under way (GIFLENS_PROGRESS_EVERY=1: a line a second)."""
    data = tmp_path / "data"
    env = {**os.environ, "GIFLENS_PROGRESS_EVERY": "1", "NUMBA_CACHE_DIR": str(ROOT / ".numba-cache")}
    proc = subprocess.Popen([GIFLENS, "import", "classes", str(shared_data / "giphy-celebrities.csv"), "--data-dir",
                             str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # Ctrl-C as in a shell
    counted = None
    for line in proc.stderr:
        if re.match(r"import classes (\d+)/2306 ", line) and proc.poll() is None:
            counted = line
            proc.send_signal(signum)
            break
    out, err = proc.communicate()
    assert counted is not None, f"no count while the import ran: {err}"
    assert proc.returncode == code, (out, err)
    assert out.strip().splitlines()[-1] == ("interrupted: nothing imported from giphy-celebrities.csv (one transaction, "
                                            "rolled back: the store is as it was)"), out
    assert "Traceback" not in err and "Aborted" not in err, err
    with sqlite3.connect(data / "giflens.db") as db:
        assert db.execute("select count(*) from celebrity_class").fetchone()[0] == 0
        assert db.execute("select count(*) from audit_event").fetchone()[0] == 0


# -- 4. a status's text is cut to the width ----------------------------------------------------------------
@pytest.mark.parametrize("total", [None, 2306])
def test_a_long_status_text_is_cut_to_one_line(total, monkeypatch):
    """The commands' console 80 wide, as a log draws it."""
    from rich.console import Console

    monkeypatch.setattr(cli, "console", Console(file=io.StringIO(), width=80, color_system=None))
    out = io.StringIO()  # the status as drawn while it runs (not its last drawing as it stops)
    narrow = Console(file=out, width=80, color_system=None)
    doing = "importing classes from " + "a-class-list-with-a-long-name-" * 3 + "2024.csv"
    with cli.status_task("import classes", doing) as (progress, task):
        if total:
            cli._step_progress(progress, task)(1200, total)
        narrow.print(progress.make_tasks_table(progress.tasks))
    shown = out.getvalue().rstrip("\n")
    assert "\n" not in shown and len(shown) <= 80 and shown.endswith("2024.csv") and "…" in shown, shown
    assert ("1200/2306" in shown) == bool(total), shown


# -- 5. a refused import: its error is the last line ---------------------------------------------------------
def gif_media(data: Path, shared_data: Path) -> list[str]:
    """A store holding a media row for each GIF of gifs.csv (its name; sha256 n° i), as ingest stores them."""
    from labeling.db import open_store, session_scope
    from labeling.schema import Media

    files = [line.split(",", 1)[0] for line in (shared_data / "gifs.csv").read_text(encoding="utf-8").splitlines()[1:]]
    data.mkdir(parents=True)
    with session_scope(open_store(f"sqlite:///{data / 'giflens.db'}")) as session:
        session.add_all(Media(sha256=f"{i:064x}", path=str(shared_data / "gifs" / f), kind="gif", status="ok",
                              frame_hashes=[]) for i, f in enumerate(files))
    return files


def test_a_refused_import_leaves_its_error_as_the_last_line(tmp_path, shared_data):
    """Line 2 names line 1's GIF by its sha256 with another confidence: refused there, the count at 1 of 4."""
    data = tmp_path / "data"
    files = gif_media(data, shared_data)
    dataset = tmp_path / "tags.jsonl"
    dataset.write_text(json.dumps({"media": files[0], "tags": [["funny", 0.9]]}) + "\n"
                       + json.dumps({"sha256": f"{0:064x}", "tags": [["funny", 0.5]]}) + "\n", encoding="utf-8")
    result = invoke("import", "tags", dataset, "--data-dir", data)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "line 2: tag 'funny' of media 1" in lines[-1], result.stderr
    assert not [line for line in lines if line.startswith("import tags")], result.stderr


# -- 6. the tags imports count their write -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_the_tags_imports_are_not_counted_done_while_they_write(tmp_path, shared_data, monkeypatch, kind):
    """The count seen as the tags are written (`apply_tags`, the call through to it unchanged), and at the end."""
    import labeling.importers as importers
    import labeling.tag_dataset as tag_dataset
    from labeling.db import open_store

    data = tmp_path / "data"
    gif_media(data, shared_data)
    source = shared_data / "gifs.csv"
    if kind == "jsonl":
        rows = [line.split(",", 1) for line in source.read_text(encoding="utf-8").splitlines()[1:]]
        source = tmp_path / "tags.jsonl"
        source.write_text("".join(json.dumps({"media": f, "tags": [[t, 0.9] for t in tags.strip().split(";") if t]})
                                  + "\n" for f, tags in rows), encoding="utf-8")
    seen: list[tuple[int, int]] = []
    at_write: list[tuple[int, int]] = []
    module = tag_dataset if kind == "jsonl" else importers
    real_apply_tags = module.apply_tags
    monkeypatch.setattr(module, "apply_tags", lambda *a, **k: (at_write.append(seen[-1]), real_apply_tags(*a, **k))[1])
    action = tag_dataset.import_tag_dataset if kind == "jsonl" else importers.import_tags
    summary = action(open_store(f"sqlite:///{data / 'giflens.db'}"), source, "tester",
                     on_progress=lambda done, total: seen.append((done, total)))
    assert summary.tags > 0 and len(at_write) == 1
    done, total = at_write[0]
    assert total == 63 + importers.TAG_WRITE_STEPS and done < total, seen
    assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_the_write_steps_say_writing_with_no_time_left_guessed(monkeypatch):
    """As drawn during the write: the count not full, "writing to the store", the time left unknown."""
    from rich.console import Console

    monkeypatch.setattr(cli, "console", Console(file=io.StringIO(), width=120, color_system=None))
    out = io.StringIO()
    with cli.status_task("import tags", "importing tags from gifs.csv") as (progress, task):
        update = cli._step_progress(progress, task, after="writing to the store", last=2)
        update(62, 65)
        update(63, 65)
        Console(file=out, width=120, color_system=None).print(progress.make_tasks_table(progress.tasks))
    shown = out.getvalue()
    assert "63/65" in shown and "-:--:--" in shown and shown.rstrip().endswith("writing to the store"), shown


# -- 7. Ctrl-C after the COMMIT ------------------------------------------------------------------------------
def test_an_import_interrupted_after_its_commit_says_it_was_stored(tmp_path, shared_data, monkeypatch):
    """Ctrl-C raised as `run_operation` returns, its transaction committed: where a real one lands when it comes
    after the COMMIT and before the importer hands back its summary."""
    from contextlib import contextmanager

    import labeling.audit as audit
    import labeling.importers as importers

    @contextmanager
    def interrupted_after_commit(*args, **kwargs):
        with audit.run_operation(*args, **kwargs) as op:
            yield op
        raise KeyboardInterrupt

    monkeypatch.setattr(importers, "run_operation", interrupted_after_commit)
    classes = tmp_path / "classes.csv"
    classes.write_text("".join((shared_data / "giphy-celebrities.csv").read_text(encoding="utf-8")
                               .splitlines(keepends=True)[:31]), encoding="utf-8")  # the header and 30 classes
    data = tmp_path / "data"
    result = invoke("import", "classes", classes, "--data-dir", data)
    assert result.exit_code == 130, result.output
    assert result.stdout.strip().splitlines()[-1] == (
        "interrupted: import classes from classes.csv stored as audit event 1 before the interruption "
        "(kept: `giflens undo 1` takes it back)"), result.stdout
    with sqlite3.connect(data / "giflens.db") as db:
        assert db.execute("select count(*) from celebrity_class").fetchone()[0] == 30
        assert db.execute("select id from audit_event").fetchall() == [(1,)]


# -- 8. a tag dataset's refusals name the tag as typed -------------------------------------------------------
@pytest.mark.parametrize("second", ["same line", "line 2 by sha256"])
def test_a_tag_given_two_confidences_is_named_as_typed(tmp_path, shared_data, second):
    """An emoji joined by a zero-width joiner, as every other message shows a tag (`quoted`), not repr's \\u200d."""
    from labeling.db import open_store
    from labeling.errors import ValidationError
    from labeling.tag_dataset import import_tag_dataset

    data = tmp_path / "data"
    files = gif_media(data, shared_data)
    tag = "\U0001F469\u200d\U0001F4BB"
    lines = [{"media": files[0], "tags": [[tag, 0.9], [tag, 0.5]]}] if second == "same line" else \
        [{"media": files[0], "tags": [[tag, 0.9]]}, {"sha256": f"{0:064x}", "tags": [[tag, 0.5]]}]
    dataset = tmp_path / "tags.jsonl"
    dataset.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    with pytest.raises(ValidationError) as refused:
        import_tag_dataset(open_store(f"sqlite:///{data / 'giflens.db'}"), dataset, "tester")
    assert f"tag '{tag}' " in str(refused.value) and "\\u200d" not in str(refused.value), refused.value
