"""`giflens` command line: every page of the app can be driven from here too."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, Task, TaskID,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Column, Table
from rich.text import Text

from models.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from embeddings.pipeline import MediaResult

app = typer.Typer(help="giflens: curate face and GIF embeddings.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)



def _data_dir_option(value: Optional[str]) -> Optional[Path]:
    """--data-dir as a folder. Why not Typer's Path: it turns "" (an unset shell variable, `make run
    DATA_DIR=`) into Path('.'), and the store would be made wherever the command runs. Refused, exit 2,
    like an empty GIFLENS_DATA_DIR."""
    if value is not None and not value.strip():
        refuse("invalid setting --data-dir: must not be empty (omit it for GIFLENS_DATA_DIR or the default, "
               "giflens-data)", code=2)
    return None if value is None else Path(value)


def _refuse_unknown_model(role: str, name: str | None, source: str) -> None:
    """`error: unknown face model 'x' (--face-model); known: ...`, exit 2 like any bad option or setting.
    `source` is where the name came from (the option or the environment variable); the sentence is the
    settings' own (`unknown_model_message`)."""
    from models.registry import unknown_model_message

    problem = None if name is None else unknown_model_message(role, name, source)
    if problem is not None:
        refuse(problem, code=2)


def _model_option(role: str):
    """The callback of --face-model / --gif-model: a name the registry does not know is refused, exit 2, listing
    the known ones (as the settings refuse it in GIFLENS_FACE_MODEL). Why: export wrote an export naming the
    unknown model (exit 0) and predict or autotag blamed the store. A known model the store does not hold is
    still theirs to refuse (exit 1): that is the store's content, not a typo."""

    def callback(param: typer.CallbackParam, value: Optional[str]) -> Optional[str]:
        _refuse_unknown_model(role, value, param.opts[0])
        return value

    return callback


DataDir = Annotated[Optional[str], typer.Option("--data-dir", callback=_data_dir_option,
                                                help="Data folder (cache, SQLite store). Env: GIFLENS_DATA_DIR.")]
DatabaseUrl = Annotated[Optional[str], typer.Option("--database-url", help="SQLAlchemy URL. Env: GIFLENS_DATABASE_URL.")]
FaceModel = Annotated[Optional[str], typer.Option(
    "--face-model", callback=_model_option("face"),
    help="Face embedding model to use (default: the store's only one; required when it has several).")]


def make_settings(**overrides: object) -> Settings:
    """Environment first, then the options actually given on the command line.

    A bad value (GIFLENS_FRAMES=abc, say) is a one-line error naming the variable and exit 2, like a
    bad option, instead of pydantic's traceback. pydantic-settings' own SettingsError (an env value it
    cannot decode before validation) is one such line too."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        _settings_error("; ".join(f"{_setting_name(e['loc'][0])}: {e['msg']}" for e in exc.errors()), exc)
    except SettingsError as exc:
        import re

        field = re.search(r'field "([^"]+)"', str(exc))
        _settings_error(f"{_setting_name(field[1])}: cannot be parsed" if field else str(exc), exc)


def _setting_name(field: object) -> str:
    """`frames (GIFLENS_FRAMES)`: the setting as Python and as the environment name it."""
    return f"{field} (GIFLENS_{str(field).upper()})"


def _settings_error(problems: str, exc: Exception) -> NoReturn:
    from rich.markup import escape

    console.print(f"[red]error:[/red] invalid setting {escape(one_line(problems))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2) from exc


def refuse(message: str, code: int = 1) -> NoReturn:
    """Bad input: one line `error: ...` on stderr and exit 1, like every other refusal (not Typer's
    multi-line usage box, which stays for options Typer itself does not know)."""
    from rich.markup import escape

    console.print(f"[red]error:[/red] {escape(one_line(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class _Bar(Progress):
    """Transient while it runs; drawn once more when it stops, only if there was work to show. So a
    command refused before any work, or one with nothing to do (an export of 0 faces), leaves neither
    an empty "0/?" bar nor a blank line, and a finished one leaves its bar above the summary.

    Off a terminal (a log file, a pipe, `docker logs`) rich draws nothing while it runs, so there plain
    status lines say how far it got (`_StatusLines`); on a terminal nothing else is printed."""

    _status: _StatusLines | None = None

    def start(self) -> None:
        super().start()
        if not self.console.is_terminal and self._status is None:
            self._status = _StatusLines(self, _status_every())
            self._status.start()

    def stop(self) -> None:  # not Progress.stop: off a terminal it adds a blank line
        if self._status is not None:  # before the last drawing: no status line below it
            self._status.stop()
            self._status = None
        was_running = self.live.is_started
        self.live.stop()
        if was_running and any(t.visible and (t.total or t.completed) for t in self.tasks):
            self.console.print(self.get_renderable())


def _status_every() -> float:
    """Seconds between status lines off a terminal, GIFLENS_PROGRESS_EVERY. Every command made its settings
    (refusing a bad value, exit 2) before its bar starts; the default is left only when the environment alone
    is no valid settings (GIFLENS_DATA_DIR= under a --data-dir that overrides it)."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        return Settings().progress_every
    except (ValidationError, SettingsError):
        return Settings.model_fields["progress_every"].default


class _StatusLines:
    """A bar's plain status lines off a terminal, `ingest 20/63 0:00:40 elapsed, ~0:01:20 left: <current>`,
    on stderr like the bar. Why: rich draws a bar only on a terminal, and a 9-minute ingest into a log said
    nothing until its end. None in the first `every` seconds (a short command's last bar says it all); then
    one each `every` seconds, sooner when a tenth more of the total is done, but never two within `every / 3`
    seconds: a log gets a few lines a minute, not one per file."""

    def __init__(self, progress: Progress, every: float) -> None:
        import threading

        self.progress, self.every = progress, every
        self.started = self.last_line = progress.get_time()
        self.done_at_last_line: dict[TaskID, float] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="giflens-status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stopped.wait(min(1.0, self.every / 3)):
            now = self.progress.get_time()
            with self.progress._lock:  # the command's thread updates the tasks meanwhile
                # a task with no count yet but a word of what it does (a status, an export reading the store) too
                tasks = [t for t in self.progress.tasks
                         if t.visible and (t.total or t.completed or t.fields.get("current"))]
                lines = [_status_line(t) for t in tasks] if self._due(tasks, now) else []
            if lines:
                self.last_line = now
                self.done_at_last_line = {t.id: t.completed for t in tasks}
                for line in lines:
                    self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _due(self, tasks: list[Task], now: float) -> bool:
        since = now - self.last_line
        if not tasks or now - self.started < self.every:
            return False
        return since >= self.every or (since >= self.every / 3 and any(
            t.total and t.completed - self.done_at_last_line.get(t.id, 0) >= t.total / 10 for t in tasks))


def _status_line(task: Task) -> str:
    """One task as a plain line: the bar's own count, elapsed time, time left (when known) and status. A task
    with no count yet (a status: `import classes 0:00:10 elapsed: importing classes from x.csv`) says no "0/?"."""
    elapsed = TimeElapsedColumn().render(task).plain
    left = _TimeLeftColumn().render(task).plain
    count = "" if task.total is None and not task.completed else \
        f" {task.completed:g}/{'?' if task.total is None else f'{task.total:g}'}"
    line = f"{task.description}{count} {elapsed} elapsed"
    if left and "-" not in left:
        line += f", ~{left} left"
    current = one_line(str(task.fields.get("current") or ""))
    return f"{line}: {current}" if current else line


class _TimeLeftColumn(TimeRemainingColumn):
    """Rich's time left, except for a task that sets `eta_after` (an ingest): "-:--:--" until that many
    steps are done, then the average pace of the whole run (elapsed / done x left). Why: an ingest's files
    come back in bursts, a chunk at a time after its batched inference (the first one after the models
    load), and rich's recent-speed estimate read a burst of 8 files in a second as 55 files left in one
    second."""

    def render(self, task: Task) -> Text:
        eta_after = task.fields.get("eta_after")
        if eta_after is None or task.total is None or task.finished:
            return super().render(task)
        if task.completed < eta_after or not task.elapsed:
            return Text("-:--:--", style="progress.remaining")
        left = int(task.elapsed / task.completed * (task.total - task.completed))
        minutes, seconds = divmod(left, 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"{hours:d}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


BAR_WIDTH = 24


class _CurrentColumn(TextColumn):
    """The file or stage under way, cut at its start to the width the other columns leave. Why: rich
    squeezes every column of a line too long, and a log is drawn 80 wide: "training the head on the holdout
    split, epoch 19/100" turned the count "18/205" into "1…" and the times into "0:…"."""

    def __init__(self, on: Console, counted: bool = True) -> None:
        super().__init__("{task.fields[current]}", table_column=Column(no_wrap=True, overflow="ellipsis"))
        self._console, self._counted = on, counted

    def _beside(self, task: Task) -> int:
        """The cells the line's other columns take: a bar's (`progress_bar`), or a status's (`status_task`
        before its step has a count: spinner, description, elapsed time)."""
        if not self._counted:
            return 1 + len(task.description) + 8 + 3  # spinner, description, elapsed, 3 gaps
        total = "?" if task.total is None else str(int(task.total))
        count = 2 * len(total) + 1  # MofNCompleteColumn pads the done count to the total's width
        return len(task.description) + BAR_WIDTH + count + 2 * 8 + 5  # times, 5 gaps

    def render(self, task: Task) -> Text:
        text = super().render(task)
        room = max(self._console.width - self._beside(task), 8)
        if text.cell_len > room:  # cut at the start: the end says the most (epoch 19/100, a file's name)
            text = Text("…") + text[len(text.plain) - room + 1:]
        return text


def progress_bar(on: Console | None = None) -> Progress:
    """The commands' bar, drawn on `on` (default: the commands' stderr console)."""
    on = on or console
    return _Bar(*_bar_columns(on), console=on, transient=True)


def _bar_columns(on: Console) -> tuple[ProgressColumn, ...]:
    """The bar's columns: description, bar, count, elapsed, time left, the stage or file under way."""
    return (TextColumn("[bold]{task.description}"), BarColumn(bar_width=BAR_WIDTH), MofNCompleteColumn(),
            TimeElapsedColumn(), _TimeLeftColumn(), _CurrentColumn(on))


class _StepBar(_Bar):
    """`status_task`'s bar: a spinner, the step, its elapsed time and what it does while the step has no
    count; the commands' bar (`_bar_columns`) once it has one (`on_progress` gave a total). Why: a
    2,306-row class import sat under a bare spinner for seconds, with no hint of how far it was."""

    def __init__(self, on: Console) -> None:
        self._status_columns = (SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                                _CurrentColumn(on, counted=False))
        self._counted_columns = _bar_columns(on)  # before Progress draws itself once (with no task) as it is made
        super().__init__(*self._counted_columns, console=on, transient=True)

    def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
        tasks = list(tasks)
        self.columns = self._counted_columns if any(t.total is not None for t in tasks) else self._status_columns
        return super().make_tasks_table(tasks)


@contextmanager
def progress_task(description: str) -> Iterator[tuple[Progress, TaskID]]:
    """One bar for one command. A command refused before any work started leaves only its error
    message, not an empty "0/?" bar under it."""
    with progress_bar() as progress:
        task = progress.add_task(description, total=None, current="")
        try:
            yield progress, task
        except BaseException:
            drop_idle_bar(progress, task)
            raise


@contextmanager
def status_task(description: str, doing: str) -> Iterator[tuple[Progress, TaskID]]:
    """A long step, with no count until it has one: a spinner, its elapsed time and `doing` on a terminal, a bar
    with its count once `_step_progress` gives one (`_StepBar`); off one, the plain status lines of a bar
    (`_StatusLines`: `import classes 0:00:10 elapsed: importing classes from x.csv`, then `import classes
    1200/2306 0:00:02 elapsed, ~0:00:02 left: ...`), and the bar drawn once as it stops when it had a count.
    Why not console.status: it printed nothing off a terminal, where a 17-second import said nothing."""
    with _StepBar(console) as progress:
        task = progress.add_task(description, total=None, current=doing)
        try:
            yield progress, task
        except typer.Exit:  # a refusal (`_run`, `refuse`) printed its error: the last line, no half count below it
            _hide_tasks(progress)
            raise


def _hide_tasks(progress: Progress) -> None:
    """Draw none of the bar's tasks as it stops. Why: a step refused halfway (a tag dataset's contradiction on
    line 2) drew its bar, `import tags 1/2 ...`, below the error it had printed."""
    for task in progress.tasks:
        progress.update(task.id, visible=False)


def _step_progress(progress: Progress, task: TaskID, after: str = "", last: int = 0) -> Callable[[int, int], None]:
    """on_progress(done, total) of a step under `status_task`: its count; once all but the `last` steps are
    counted (the steps of a tags import's write, `TAG_WRITE_STEPS`; 0: all), `after` (what the step does then,
    an import's write) in the current column and the time left unknown (`-:--:--`) until the count is full.
    Why: those steps have no count of their own, and the pace of the lines said "~0:00:00 left" for seconds."""

    def update(done: int, total: int) -> None:
        writing = {"current": after, "eta_after": total} if after and done >= total - last else {}
        progress.update(task, completed=done, total=total, **writing)

    return update


@contextmanager
def interruption_said(kept: Callable[[], str]) -> Iterator[None]:
    """Ctrl-C or SIGTERM inside: `interrupted: <kept()>` on stdout (asked then: what was kept may depend on how
    far the command got), exit 130 or 143 (128 + the signal), as an
    interrupted ingest says what it kept (`_report_interrupted`), not click's bare "Aborted!" and exit 1.
    Entered outside the command's `status_task`, so the bar is drawn for the last time above the line."""
    try:
        yield
    except (KeyboardInterrupt, Terminated) as exc:
        _exit_interrupted(exc, kept())


def _exit_interrupted(exc: KeyboardInterrupt | Terminated, kept: str) -> NoReturn:
    """`interrupted: <kept>` on stdout, then exit 130 for Ctrl-C or 143 for SIGTERM (128 + the signal, as a
    shell reports it): the one ending of every interrupted command."""
    typer.echo(one_line(f"interrupted: {kept}"))
    raise typer.Exit(exc.code if isinstance(exc, Terminated) else 130) from exc


def drop_idle_bar(progress: Progress, task: TaskID) -> None:
    """Remove a bar no step was done on: a command stopped before any work leaves only its message."""
    if not next(t for t in progress.tasks if t.id == task).completed:
        progress.remove_task(task)


def one_line(text: str) -> str:
    """Control characters (a newline in a file name) shown escaped, so one failure stays one line; the
    format characters names are typed with (a Persian non-joiner, an emoji's joiner) as typed."""
    from labeling.validation import as_typed  # the one rule for what a message escapes

    return as_typed(text)


def _name(path: Path | str) -> str:
    return one_line(Path(path).name)[:40]


# The share of an ingest's files done before its bar shows a time left (`_TimeLeftColumn`): the first
# chunk's time includes loading the models, and a few files say little of the rest.
ETA_SHARE = 0.1


class _IngestProgress:
    """The ingest command's bar. Results come back a chunk at a time, after the chunk's batched inference,
    so counting them alone left the bar at 0/N (no time left) while the first chunk was read and the models
    loaded, then jumped. The count still moves once per file stored (`on_result`); beside it the bar says
    what is going on meanwhile (`on_read`): the file just read, then the files going through the networks."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress, self.task = progress, task
        self.total = self.read = 0
        self.inferred = False  # whether a batch went through the networks yet (the first loads them)

    def on_start(self, total: int) -> None:
        self.total = total
        self.progress.update(self.task, total=total, eta_after=max(1, round(total * ETA_SHARE)),
                             current="reading the first file" if total else "")

    def on_read(self, path: Path, batch: int) -> None:
        self.read += 1
        if batch:
            files = f"{batch} file{'s' if batch != 1 else ''}"
            status = (f"detecting faces in {files}" if self.inferred
                      else f"loading models, then detecting faces in {files}")
            self.inferred = True
        else:
            status = f"read {self.read} of {self.total}: {_name(path)}"
        self.progress.update(self.task, current=status)

    def on_result(self, result: MediaResult) -> None:
        self.progress.update(self.task, advance=1, current=_name(result.path))


@app.callback()
def _root() -> None:
    """giflens: curate face and GIF embeddings."""


def _refuse_unknown_face_model(given: str | None) -> None:
    """Ingest's face model checked before its settings are made, to say which of its two sources to fix:
    `error: unknown face model 'x' (--face-model); known: ...`, exit 2 (--face-model's callback checks the
    option; this, GIFLENS_FACE_MODEL when no option is given). (The settings refuse an unknown face or GIF
    model too, for every command and the app: `invalid setting face_model (GIFLENS_FACE_MODEL)`, exit 2.)"""
    if given is None:
        _refuse_unknown_model("face", os.environ.get("GIFLENS_FACE_MODEL"), "GIFLENS_FACE_MODEL")


def _no_blank_paths(nothing: str):
    """The callback of every path argument and option (ingest's PATHs, the imports' CSV or folder, export's
    OUT_DIR and --previous): a blank one is refused, exit 2, naming which, the message ending with `nothing`
    (what was not done). Why: Typer's Path turns "" (an unset shell variable, `giflens export "$DIR"`) into
    Path('.'), and the command read or wrote the folder it runs in (ingest ingested it, recursively). So each
    such parameter is a Path given `path_type=str`: Typer hands this callback the text as typed (and `--help`
    still shows `<path>`), and the callback makes the Path. (Not a `parser=`: it is not told which parameter
    it parses, nor which of ingest's PATHs.) A blank name that is there (a file named " ") is a path like any
    other; a missing or unreadable one is the command's to refuse (ingest records an unreadable file as failed)."""

    def callback(param: typer.CallbackParam, value: list[str] | str | None) -> list[Path] | Path | None:
        many = isinstance(value, list)
        values = value if many else [] if value is None else [value]
        blank = [i for i, given in enumerate(values, 1) if not given.strip() and not os.path.lexists(given)]
        if blank:
            name = param.opts[0] if param.opts[0].startswith("-") else (param.metavar or param.name).upper()
            which = f"path argument {', '.join(map(str, blank))}" if many else name
            refuse(f"{which} is empty: name a file or folder (an unset shell variable gives an empty one); "
                   f"{nothing}", code=2)
        return [Path(given) for given in values] if many else None if value is None else Path(value)

    return callback


def _path_argument(help: str, metavar: str, nothing: str) -> Any:
    """A path argument as every command takes one: given to `_no_blank_paths` as typed (path_type=str, so ""
    is not read as "."), `--help` showing `<path>` under `metavar`; `nothing` ends the blank-path refusal."""
    return typer.Argument(path_type=str, help=help, metavar=metavar, callback=_no_blank_paths(nothing))


@app.command("ingest")
def ingest_command(
    # as typed (path_type=str: "" would be "."): `_no_blank_paths` refuses a blank one; an unreadable file is
    # recorded as failed like any bad file, not a refused command
    paths: Annotated[list[Path], _path_argument("Files or folders (searched recursively).", "PATH", "nothing ingested")],
    data_dir: DataDir = None,
    frames: Annotated[Optional[int], typer.Option("--frames", min=1, max=512, help="Frames sampled per clip.")] = None,
    face_model: Annotated[Optional[str], typer.Option("--face-model", callback=_model_option("face"),
                                                      help="dlib-resnet-v1 or facenet-vggface2.")] = None,
    database_url: DatabaseUrl = None,
    editor: Editor = None,
) -> None:
    """Ingest GIFs, videos and photos into cached face and GIF embeddings (one audit event per batch)."""
    from embeddings.pipeline import CacheUnavailableError, ModelUnavailableError
    from labeling.errors import StoreError
    from labeling.ingest import ingest

    _refuse_unknown_face_model(face_model)
    settings = make_settings(data_dir=data_dir, frames=frames, face_model=face_model, database_url=database_url)
    missing = [str(p) for p in paths if not os.path.lexists(p)]  # a broken link is there: recorded as failed
    if missing:  # a typo is not a media file: refused before any work, so no "failed" row records it
        refuse(f"no such file or folder: {', '.join(missing)}")
    store = _store_for(settings)
    interrupted: KeyboardInterrupt | Terminated | None = None
    stopped: Exception | None = None  # the cache, a model or the store failed: reported below the bar
    with progress_task("ingest") as (progress, task):
        bar = _IngestProgress(progress, task)
        try:
            summary = ingest(paths, settings, on_start=bar.on_start, on_result=bar.on_result, on_read=bar.on_read,
                             store=store, editor=_editor(editor))
        # a model or a cache folder that cannot be used (no permission, a full disk) fails every file
        # alike: the batch stops with one line (what it stored is kept and audited), exit 2 like any
        # setting of the machine, not a traceback; a store error (an editor name the audit log refuses,
        # the store failing mid-batch) is one line too, exit 1. Both are said below the bar.
        except (ModelUnavailableError, CacheUnavailableError, StoreError) as exc:
            stopped = exc
            drop_idle_bar(progress, task)
        except (KeyboardInterrupt, Terminated) as exc:  # said below the bar, once it is drawn for the last time
            interrupted = exc
    if stopped is not None:  # a store error as it is, exit 1; the cache or a model on one line, exit 2
        store_error = isinstance(stopped, StoreError)
        _report_stopped(stopped, str(stopped) if store_error else one_line(str(stopped)), code=1 if store_error else 2)
    if interrupted is not None:
        _report_interrupted(interrupted)
    _print_failures_and_notes(summary)
    typer.echo(summary.line())


def _report_stopped(exc: Exception, message: str, code: int) -> NoReturn:
    """The cache, a model or the store stopped an ingest: what the batch did before the stop (its failures,
    notes and `stopped: <summary>`, from the summary `ingest` attaches as `exc.summary`), then the one-line
    error, exit `code`. Why: the files stored before the stop are kept and audited, and the failures found
    so far are real; a bare error would hide both. A batch stopped before it did anything prints the error
    line alone."""
    from rich.markup import escape

    summary = getattr(exc, "summary", None)
    if summary is not None and (summary.media or summary.notes):
        _print_failures_and_notes(summary)
        typer.echo(f"stopped: {summary.line()}")
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code) from exc


def _print_failures_and_notes(summary) -> None:
    """An ingest's failures (one line each: no wrapping, brackets in names kept, no markup), then its notes."""
    from rich.markup import escape

    for path, reason in summary.failures:
        line = one_line(reason if path in reason else f"{path}: {reason}")
        console.print(f"[red]failed[/red] {escape(line)}", highlight=False, soft_wrap=True)
    for note in summary.notes:
        console.print(f"[yellow]note[/yellow] {escape(one_line(note))}", highlight=False, soft_wrap=True)


class Terminated(SystemExit):
    """SIGTERM (a stopped container, a killed job), raised by `main`: a SystemExit, so every command ends as
    before (exit 143), and a class of its own, so ingest and import raw-dataset can report what they kept."""


def _report_interrupted(exc: KeyboardInterrupt | Terminated) -> NoReturn:
    """Ctrl-C or SIGTERM during an ingest: the failures so far and `interrupted: <summary> (re-run to resume)`,
    exit 130 or 143 (128 + the signal, as a shell reports it). Why: each file is stored as it is done and the cache makes a
    re-run skip them, so an editor needs to know what was kept and that running it again resumes, not
    a bare exit. The summary is the one `ingest` attaches to the interruption (`summary`); without it
    the line still says the batch was cut short."""
    summary = getattr(exc, "summary", None)
    if summary is not None:
        _print_failures_and_notes(summary)
    done = f"{summary.line()} " if summary is not None else "the rest of the batch was not stored "
    _exit_interrupted(exc, f"{done}(re-run to resume)")


import_app = typer.Typer(help="Import reference data (each import is idempotent and audited).", no_args_is_help=True)
app.add_typer(import_app, name="import")
Editor = Annotated[Optional[str], typer.Option("--editor", help="Who the audit log names (default: the OS user).")]
MAX_NOTES = 50


def _editor(given: str | None) -> str:
    """Who the audit log names: the --editor given, else the OS user. An explicit empty name is
    passed on and refused like a blank one, not quietly replaced by the OS user."""
    return _os_user() if given is None else given


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        return "cli"


def _display_url(url: str) -> str:
    """The URL as an error message may show it: password hidden, also one given in the query string
    (?password=..., libpq's sslpassword); one that does not parse is not echoed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return "(--database-url / GIFLENS_DATABASE_URL)"
    hidden = {key: "xxx" for key in parsed.query if "password" in key.casefold()}
    if parsed.password is None and not hidden:
        return url  # nothing to hide: as the editor typed it (SQLAlchemy would quote sqlite:///:memory:)
    return parsed.update_query_dict(hidden).render_as_string(hide_password=True)


def _store_for(settings: Settings, create: bool = True) -> sessionmaker[Session]:
    """The store of the settings, opened (created, migrated) before a command does any work.

    Every command reaches the store through here, so a URL that does not parse, a driver that is not
    installed, a server that refuses or does not answer, or a data folder that cannot hold the SQLite
    file is one line on stderr and exit 1, not a traceback, and nothing has been written.

    create=False is for commands that only read or refine what is stored (predict, export, history...):
    with the default SQLite store, a data folder without one is refused, `no giflens store in DIR`,
    and nothing is created. Why: a mistyped --data-dir would otherwise leave a new empty store behind
    and the command would blame the data ("ingest media first") instead of the folder. A store named
    by --database-url / GIFLENS_DATABASE_URL is opened as before (a new PostgreSQL database is the
    team's to create)."""
    from alembic.util.exc import CommandError
    from rich.markup import escape
    from sqlalchemy.exc import SQLAlchemyError

    from labeling.db import SchemaTooNewError, open_store

    url = settings.resolved_database_url
    _refuse_in_memory(url)
    try:
        if not create:
            _require_store(settings, url)
        return open_store(url)
    except SchemaTooNewError as exc:  # it names the store itself, and what to do
        refuse(str(exc))
    except (SQLAlchemyError, CommandError, ImportError, OSError) as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())  # psycopg's messages span lines
        if isinstance(exc, ImportError):
            reason = f"the database driver is not installed ({reason})"
        console.print(f"[red]error:[/red] cannot open the store {escape(_display_url(url))}: {escape(reason)}",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc


def _refuse_in_memory(url: str) -> None:
    """A SQLite URL without a file (sqlite://, sqlite:///, :memory:, an unset shell variable in
    sqlite:///$DB) is an in-memory store: an import would report its rows and keep none of them."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    bare = url.strip() == ":memory:"  # sqlite3's own name for it, which is no URL: refused as one, not "does not parse"
    if not bare:
        try:
            parsed = make_url(url)
        except ArgumentError:
            return  # open_store says it does not parse
        memory = not parsed.database or parsed.database == ":memory:" or parsed.query.get("mode") == "memory"
        if parsed.get_backend_name() != "sqlite" or not memory:
            return
    refuse(f"{url if bare else _display_url(url)} is an in-memory store: nothing would be kept; give a file, sqlite:///PATH")


def _require_store(settings: Settings, url: str) -> None:
    """For commands that only read or refine the store: refuse a data folder, SQLite file or database that
    holds no giflens store, before anything is created or migrated. Why: a mistyped --data-dir or URL would
    otherwise leave a new empty store (and its folders, or 13 tables in someone else's database) behind
    and the command would blame the data ("0 operation(s)") instead of the place."""
    from sqlalchemy.engine import make_url

    from labeling.db import stored_revision

    folder = Path(settings.data_dir)
    if not settings.database_url and not settings.sqlite_path.exists():
        if folder.is_file():
            return  # a data folder that is a file is left to open_store, which says why it cannot hold the store
        refuse(f"no giflens store in {folder} (ingest or import into it first, or check --data-dir / "
               "GIFLENS_DATA_DIR)")
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database).exists():
        refuse(f"no giflens store in {_display_url(url)}: no such file (check --database-url / GIFLENS_DATABASE_URL)")
    if stored_revision(url) is None:
        refuse(f"no giflens store in {_display_url(url)} (ingest or import into it first, or check "
               "--data-dir / --database-url)")


def _run(action, notes: str = "skipped", progress: Progress | None = None, details=None):
    """Run an import or export: a refusal is exit code 1 with its message, notes go to stderr,
    the one-line summary to stdout, after the command's progress bar is drawn for the last time
    (so a terminal or a log shows the bar, then the notes, then `details(summary)` if given, then
    the summary: the summary is always the last line)."""
    from rich.markup import escape

    from embeddings.pipeline import ModelUnavailableError
    from labeling.errors import StoreError

    try:
        summary = action()
    except StoreError as exc:  # bad input: the message names the file and line
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    except ModelUnavailableError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    if progress is not None:
        progress.stop()
    # Skipped rows under the command's own word, then notes that skip nothing (an import's column
    # notes, an export's split notes): each list alone, so neither hides the other.
    for label, lines in ((notes, getattr(summary, "skipped", None) or []), ("note", getattr(summary, "notes", None) or [])):
        for line in lines[:MAX_NOTES]:
            console.print(f"[yellow]{label}[/yellow] {escape(one_line(line))}", highlight=False, soft_wrap=True)
        if len(lines) > MAX_NOTES:
            console.print(f"[yellow]... and {len(lines) - MAX_NOTES} more {label}[/yellow]")
    if details is not None and (text := details(summary)):
        console.print(escape(text), highlight=False, soft_wrap=True)
    typer.echo(one_line(summary.line()))  # a file name's newline must not forge a line below it
    return summary


def _require_file(path: Path) -> None:
    """An import's CSV that is not there is refused before the store is opened: a typo must not leave a new
    data folder and an empty store behind. (One that cannot be read is the importer's to refuse.)"""
    if not path.exists():
        refuse(f"{path}: cannot read (No such file or directory)")


@import_app.command("raw-dataset")
def import_raw_dataset_command(
    folder: Annotated[Path, _path_argument("Folder holding labels.csv and raw_dataset/<Label>/*.jpg.", "FOLDER",
                                           "nothing imported")],
    data_dir: DataDir = None, database_url: DatabaseUrl = None, editor: Editor = None,
) -> None:
    """GIPHY's training layout: classes, ingested images, approved labels (the largest face of each still, every face of a one-person GIF or video)."""
    from labeling.importers import import_raw_dataset

    settings = make_settings(data_dir=data_dir, database_url=database_url)
    if not folder.is_dir():  # refused before the store is opened: a typo leaves no new store behind
        refuse(f"{folder}: no such folder (expected labels.csv and a raw_dataset/ folder, GIPHY's training layout)")
    store = _store_for(settings)
    interrupted: KeyboardInterrupt | Terminated | None = None
    with progress_task("import") as (progress, task):
        bar = _IngestProgress(progress, task)  # the images go through ingest: its bar, time left and status
        try:
            _run(lambda: import_raw_dataset(store, folder, settings, _editor(editor), on_start=bar.on_start,
                                            on_result=bar.on_result, on_read=bar.on_read), progress=progress)
        except (KeyboardInterrupt, Terminated) as exc:  # the images ingested so far are kept: said below the bar
            interrupted = exc
    if interrupted is not None:
        _report_interrupted(interrupted)


def _import_csv(what: str, csv_path: Path, data_dir: Optional[Path], database_url: Optional[str], action,
                write_steps: int = 0) -> None:
    """The shared shape of the CSV imports: the file is checked before any store is opened (a typo
    leaves no new store behind), then `action(store, on_progress)` runs as one reported operation, its
    lines counted on the bar once the file is read, then its `write_steps` (`_step_progress`). Ctrl-C or
    SIGTERM: exit 130 or 143 and `interrupted: nothing imported` (the import writes in one transaction,
    rolled back by the interruption), or what was kept when the transaction had committed (`_committed_events`)."""
    settings = make_settings(data_dir=data_dir, database_url=database_url)
    _require_file(csv_path)
    store = _store_for(settings)
    imported: list[Any] = []  # the summary, once the import returned: an interruption after it kept it all

    def run() -> Any:
        imported.append(action(store, on_progress))
        progress.update(task, current=doing)  # the bar drawn as it stops: not "writing", which is over
        return imported[0]

    def kept() -> str:
        if imported:
            return f"{imported[0].line()} (kept: it was stored before the interruption)"
        if committed:  # after the COMMIT, before the importer returned its summary
            return (f"import {what} from {_name(csv_path)} stored as audit event {committed[-1]} before the "
                    f"interruption (kept: `giflens undo {committed[-1]}` takes it back)")
        return f"nothing imported from {_name(csv_path)} (one transaction, rolled back: the store is as it was)"

    with _committed_events(store) as committed, interruption_said(kept):
        doing = f"importing {what} from {_name(csv_path)}"
        with status_task(f"import {what}", doing) as (progress, task):
            on_progress = _step_progress(progress, task, after="writing to the store", last=write_steps)
            _run(run, progress=progress)


@contextmanager
def _committed_events(store: sessionmaker[Session]) -> Iterator[list[int]]:
    """The ids of the audit events the store's sessions commit inside, each once its COMMIT returned. Why: a
    Ctrl-C can land after an import's COMMIT and before the importer returns, and "nothing imported, rolled
    back" was then said of an import the store holds. (One landing inside SQLAlchemy's commit, after the
    database's and before its after_commit hooks, is not seen: a window of a few bytecodes.)"""
    from sqlalchemy import event

    from labeling.schema import AuditEvent

    flushed: dict[int, list[int]] = {}  # id(session) -> the audit events it wrote in its open transaction
    committed: list[int] = []

    def after_flush(session: Session, _context: Any) -> None:  # `new` still lists what the flush inserted
        flushed.setdefault(id(session), []).extend(o.id for o in session.new if isinstance(o, AuditEvent))

    def after_commit(session: Session) -> None:
        committed.extend(flushed.pop(id(session), []))

    def after_rollback(session: Session) -> None:
        flushed.pop(id(session), None)

    hooks = (("after_flush", after_flush), ("after_commit", after_commit), ("after_rollback", after_rollback))
    for name, hook in hooks:
        event.listen(store, name, hook)
    try:
        yield committed
    finally:
        for name, hook in hooks:
            event.remove(store, name, hook)


@import_app.command("classes")
def import_classes_command(csv_path: Annotated[Path, _path_argument("Labels,Index CSV (GIPHY's class list).", "CSV",
                                                                    "nothing imported")],
                           data_dir: DataDir = None, database_url: DatabaseUrl = None, editor: Editor = None) -> None:
    """Celebrity classes from GIPHY's list (names like Brad_Pitt_[m.0c6qh]), in one operation."""
    from labeling.importers import import_classes

    _import_csv("classes", csv_path, data_dir, database_url, lambda store, on_progress: import_classes(store, csv_path, _editor(editor), on_progress=on_progress))


@import_app.command("attributes")
def import_attributes_command(
    csv_path: Annotated[Path, _path_argument("name plus any of gender,ethnicity,birth_year,country (CSV).", "CSV",
                                             "nothing imported")],
    data_dir: DataDir = None, database_url: DatabaseUrl = None, editor: Editor = None,
    create_missing: Annotated[bool, typer.Option("--create-missing/--skip-missing",
                                                 help="Create classes for unknown names, or only report them.")] = True,
) -> None:
    """Demographic attributes of classes (for the bias audit); empty cells are unknown and change nothing."""
    from labeling.importers import import_attributes

    _import_csv("attributes", csv_path, data_dir, database_url,
                lambda store, on_progress: import_attributes(store, csv_path, _editor(editor), create_missing,
                                                             on_progress=on_progress))


@import_app.command("tags")
def import_tags_command(csv_path: Annotated[Path, _path_argument(
                            "file,uploader_tags CSV (tags ;-separated), or an export's tags.jsonl (any *.jsonl).", "FILE",
                            "nothing imported")],
                        data_dir: DataDir = None, database_url: DatabaseUrl = None, editor: Editor = None) -> None:
    """Uploader tags onto ingested media, matched by file name (confidence 1.0, source uploader); a *.jsonl
    file is an export's tag dataset: matched by sha256, then file name, each tag with its confidence (source import)."""
    from labeling.importers import TAG_WRITE_STEPS, import_tags
    from labeling.tag_dataset import import_tag_dataset, is_tag_dataset

    action = import_tag_dataset if is_tag_dataset(csv_path) else import_tags
    _import_csv("tags", csv_path, data_dir, database_url,
                lambda store, on_progress: action(store, csv_path, _editor(editor), on_progress=on_progress),
                write_steps=TAG_WRITE_STEPS)


@app.command("export")
def export_command(
    out_dir: Annotated[Path, _path_argument("Folder to create (must not exist, or be empty), in a folder you can write: "
                                            "the export is built beside it.", "OUT_DIR", "nothing exported or verified")],
    data_dir: DataDir = None, database_url: DatabaseUrl = None,
    editor: Annotated[Optional[str], typer.Option("--editor", help="Who the manifest names (default: the OS user).")] = None,
    split: Annotated[float, typer.Option("--split", help="Share of each class's faces for validation, in [0, 1).")] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the train / validation split.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier export in OUT_DIR.")] = False,
    previous: Annotated[Optional[Path], typer.Option(
        "--previous", path_type=str, help="An earlier export of this store (default: the newest recorded one still on disk): every "
                           "class still exported keeps its label index and every earlier media item its train / "
                           "validation side, so a model fine-tuned on it is never validated on its training faces.",
        metavar="EARLIER_EXPORT", callback=_no_blank_paths("nothing exported"))] = None,
    no_previous: Annotated[bool, typer.Option(
        "--no-previous", help="Start afresh: classes numbered in creation order, the split drawn anew.")] = False,
    face_model: FaceModel = None,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Export nothing: check that OUT_DIR, an earlier export, still holds every file its "
                         "manifest.json lists, unchanged (sha256); exit 1 listing what differs.")] = False,
) -> None:
    """Confirmed labels in GIPHY's training layout, train/val split, tags JSONL, projector TSV, manifest.json."""
    from rich.markup import escape

    from labeling.errors import StoreError
    from labeling.export import PreviousExportError, check_out_dir, export_dataset, newest_export, resolve_out_dir
    from labeling.validation import check_editor

    if verify:
        _verify_export(out_dir)
        return
    if previous is not None and no_previous:
        refuse("--previous and --no-previous contradict each other; give one")
    settings = make_settings(data_dir=data_dir, database_url=database_url)
    store = _store_for(settings, create=False)
    # What export_dataset would refuse first, refused before the note below: no note above a refusal.
    if not 0.0 <= split < 1.0:
        refuse(f"the validation split must be in [0, 1), got {split}")
    try:
        check_editor(_editor(editor))
        check_out_dir(Path(out_dir).absolute(), overwrite, Path(settings.data_dir))
        _check_out_parent(resolve_out_dir(out_dir))
        face_model = _export_face_model(store, face_model, settings)
    except StoreError as exc:
        refuse(str(exc))
    chosen = None if no_previous else previous or newest_export(store)
    implicit = previous is None and chosen is not None
    # An earlier export the editor did not name is said aloud before anything runs, so a numbering
    # or split that follows it is never a surprise, and a failure to read it is not a riddle.
    if implicit:
        console.print(escape(f"keeping label indices and train / validation sides of the newest earlier export "
                             f"{chosen} (--no-previous to start afresh)"), highlight=False, soft_wrap=True)

    def run():
        progress.update(task, current="reading the store and drawing the split")  # seconds before the first crop
        try:
            return export_dataset(
                store, Path(settings.data_dir), out_dir, _editor(editor), split=split, seed=seed,
                face_model=face_model, overwrite=overwrite, previous=chosen,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total,
                                                                current="face crops"))
        except PreviousExportError as exc:
            if not implicit:
                raise
            raise PreviousExportError(f"{exc} (the newest earlier export, used by default; "
                                      "--no-previous to skip)") from exc

    with progress_task("export") as (progress, task):
        _run(run, notes="note", progress=progress, details=_no_faces_exported)


def _verify_export(folder: Path) -> None:
    """`giflens export --verify DIR`: each file that differs from DIR's manifest.json on a line, exit 1;
    exit 0 with one line when all match. No store is opened: an export is checked wherever it was copied."""
    import json

    from rich.markup import escape

    from labeling.export import verify_export

    if not folder.is_dir():
        refuse(f"{folder}: no such folder (give an export's folder, the one holding manifest.json)")
    with progress_task("verify") as (progress, task):
        problems = verify_export(folder, on_progress=lambda done, total: progress.update(
            task, completed=done, total=total, current="hashing files"))
    if problems:
        for line in problems[:MAX_NOTES]:
            console.print(f"[red]differs[/red] {escape(one_line(line))}", highlight=False, soft_wrap=True)
        if len(problems) > MAX_NOTES:
            console.print(f"[red]... and {len(problems) - MAX_NOTES} more[/red]")
        console.print(escape(f"export {folder} does not match its manifest.json: {len(problems)} problem(s)"),
                      highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    files = len(json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["files"])
    typer.echo(one_line(f"export {folder} verified: {files} files match manifest.json"))


def _export_face_model(store: sessionmaker[Session], given: str | None, settings: Settings) -> str:
    """The face model whose crops the export copies, chosen as `giflens predict` chooses it: the one given
    (which the store must hold), else the store's only one. Why not GIFLENS_FACE_MODEL: that names what
    ingest computes; a store ingested with another model would export no face at all, with exit 0.
    A store without any face embedding exports its classes and tags whatever the model."""
    from labeling.queries import face_models

    if face_models(store).empty:
        return given or settings.face_model
    from labeling.recognition import resolve_face_model

    return resolve_face_model(store, given)


def _check_out_parent(out_dir: Path) -> None:
    """Refuse an OUT_DIR whose nearest existing ancestor is a file or cannot be written, before the note on
    the earlier export the run would follow: no note above a refusal. (The export refuses it too, later.)"""
    from labeling.errors import ValidationError

    ancestor = out_dir.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValidationError(f"cannot create {out_dir}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        from labeling.export import unwritable_parent

        raise ValidationError(unwritable_parent(out_dir, ancestor, "permission denied"))


def _no_faces_exported(summary) -> str | None:
    """A warning above the summary whenever confirmed labels were skipped for want of a face crop (none of
    the chosen model, or crops in another editor's data folder): an export lacking them is otherwise easy
    to take for a complete one. The exit stays 0: an export of what is available is still useful."""
    from labeling.export import no_faces_exported

    note = no_faces_exported(summary, "give it with --face-model")
    return None if note is None else f"warning: {note}"


def streamlit_command(script: Path, settings: Settings, port: int, headless: bool) -> list[str]:
    """`streamlit run app.py` with the upload limit taken from the settings, so the browser refuses
    what the Ingest page would refuse (GIFLENS_MAX_FILE_BYTES), not Streamlit's own 200 MB."""
    import math
    import sys

    upload_mb = max(1, math.ceil(settings.max_file_bytes / 2**20))
    return [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
            "--server.headless", str(headless).lower(), "--browser.gatherUsageStats", "false",
            "--server.maxUploadSize", str(upload_mb)]


@app.command("app")
def app_command(
    data_dir: DataDir = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port of the web app.")] = 8501,
    database_url: DatabaseUrl = None,
    headless: Annotated[bool, typer.Option("--headless/--browser", help="Do not open a browser window.")] = True,
) -> None:
    """Start the editors' app (Streamlit) on the data folder's store.

    The store is opened (created and migrated) before the server starts, so a wrong database URL
    or a failed migration is an error here rather than in the first editor's browser. Streamlit
    runs as a child process; SIGTERM, SIGINT and SIGHUP sent to `giflens app` are passed on to it,
    so a supervisor (docker stop, systemd, a test) that stops this process stops the server too."""
    import os
    import signal
    import subprocess

    settings = make_settings(data_dir=data_dir, database_url=database_url)
    _store_for(settings)  # a bad URL or a failed migration: one line and exit 1
    env = dict(os.environ, GIFLENS_DATA_DIR=str(Path(settings.data_dir).resolve()))
    if settings.database_url:
        env["GIFLENS_DATABASE_URL"] = settings.database_url
    script = Path(__file__).resolve().parents[1] / "app.py"
    typer.echo(f"giflens app on http://localhost:{port} (data folder {env['GIFLENS_DATA_DIR']})")
    command = streamlit_command(script, settings, port, headless)
    children: list[subprocess.Popen] = []
    pending: list[int] = []  # signals that arrived before the server existed

    def forward(signum: int, _frame: object) -> None:
        if children:
            children[0].send_signal(signum)
        else:
            pending.append(signum)

    # Handlers first, so a signal that arrives while the server starts is not lost; its own process
    # group, so a Ctrl-C in the terminal reaches only this process, which passes it on once.
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        children.append(subprocess.Popen(command, env=env, process_group=0))
        for signum in pending:
            children[0].send_signal(signum)
        code = children[0].wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    raise typer.Exit(code)


# -- the recognition loop: predictions, retraining, tag suggestions, near duplicates ----------------
Top = Annotated[int, typer.Option("--top", help="Classes kept per prediction, best first.")]
TrackMethod = Annotated[str, typer.Option("--track-method", help="One prediction per GIF track: mean or product.")]


def _progress_callback(progress: Progress, task):
    return lambda done, total: progress.update(task, completed=done, total=total)


def _step_callback(progress: Progress, task):
    """on_step(text): the stage under way, in the bar's `current` column (and its status lines off a terminal)."""
    return lambda doing: progress.update(task, current=doing)


@app.command("predict")
def predict_command(
    data_dir: DataDir = None, database_url: DatabaseUrl = None, editor: Editor = None, face_model: FaceModel = None,
    top: Top = 5, track_method: TrackMethod = "mean",
    undecided_only: Annotated[bool, typer.Option(
        "--undecided-only", help="Only faces nobody decided (by default every face; decisions are always kept).")] = False,
) -> None:
    """Fit the celebrity classifier on confirmed labels, save it, and predict every face and face track."""
    from labeling.recognition import refresh_predictions

    settings = make_settings(data_dir=data_dir, database_url=database_url)
    store = _store_for(settings, create=False)
    with progress_task("predict") as (progress, task):
        _run(lambda: refresh_predictions(
            store, face_model, data_dir=Path(settings.data_dir), top=top, track_method=track_method,
            faces="undecided" if undecided_only else "all", editor=_editor(editor),
            on_progress=_progress_callback(progress, task)), notes="note", progress=progress)


@app.command("retrain")
def retrain_command(
    data_dir: DataDir = None, database_url: DatabaseUrl = None, editor: Editor = None, face_model: FaceModel = None,
    center_loss_lambda: Annotated[float, typer.Option("--center-loss-lambda", help="Weight of the center loss.")] = 0.01,
    hidden: Annotated[Optional[int], typer.Option("--hidden", help="Hidden width of an MLP head (default: linear).")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs of the head.")] = 40,
    holdout: Annotated[float, typer.Option("--holdout", help="Share of each class's confirmed faces held out.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the holdout split and the head's training.")] = 0,
    top: Top = 5, track_method: TrackMethod = "mean",
) -> None:
    """Retrain the head on confirmed labels; deploy it if it beats the centroid classifier on held-out faces.

    Both models are saved under <data-dir>/models/ (fitted on every confirmed label), the undecided faces
    get the better model's predictions, and the last line ends with before=... after=...: the holdout
    accuracy of the centroid baseline and of the deployed model, fitted on the same training split.
    """
    from labeling.recognition import retrain

    settings = make_settings(data_dir=data_dir, database_url=database_url)
    store = _store_for(settings, create=False)
    with progress_task("retrain") as (progress, task):
        _run(lambda: retrain(
            store, Path(settings.data_dir), face_model, center_loss_lambda=center_loss_lambda,
            hidden=hidden, epochs=epochs, holdout_share=holdout, seed=seed, top=top, track_method=track_method,
            editor=_editor(editor), on_progress=_progress_callback(progress, task),
            on_step=_step_callback(progress, task)), notes="note", progress=progress,
            details=lambda r: f"{r.decision}\nartifacts: {r.artifact} (deployed), report {r.report}")


@app.command("autotag")
def autotag_command(
    data_dir: DataDir = None, database_url: DatabaseUrl = None, editor: Editor = None,
    text: Annotated[str, typer.Option("--text", help=(
        "Text expert over: tags (the media's own tags, so its weight is partly measured on the answer), "
        "weak-labels (ImageNet labels from ingest, which never hold the answer), none."))] = "tags",
    k: Annotated[int, typer.Option("--k", help="Neighbours each kNN expert asks.")] = 10,
    min_frequency: Annotated[float, typer.Option("--min-frequency", help="Share of neighbours a tag needs.")] = 0.2,
    top: Annotated[int, typer.Option("--top", help="Suggestions stored per media item at most.")] = 5,
    gif_model: Annotated[Optional[str], typer.Option("--gif-model", callback=_model_option("gif"),
                                                     help="GIF embedding model (default: the only one).")] = None,
) -> None:
    """Experts voting (visual, identity, text): tag suggestions for every media item; prints the weights.

    Uploader and import tags are set to 1.0 when an expert confirms them, else 0.7.

    With --text tags (the default) the text expert reads each media item's own tags: its weight is measured
    holding one tag out, but the tags left are still the media's own, so the weight is partly measured on the
    answer. --text weak-labels reads the ImageNet labels from ingest instead, which never contain the answer."""
    from labeling.auto_tagging import autotag

    settings = make_settings(data_dir=data_dir, database_url=database_url)
    source = {"tags": "tags", "weak-labels": "weak_labels", "weak_labels": "weak_labels", "none": None}
    if text not in source:
        refuse(f"--text must be tags, weak-labels or none, got {text!r}")
    store = _store_for(settings, create=False)
    with progress_task("autotag") as (progress, task):
        _run(lambda: autotag(
            store, _editor(editor), gif_model=gif_model, text=source[text], k=k,
            min_frequency=min_frequency, top=top, on_progress=_progress_callback(progress, task),
            on_step=_step_callback(progress, task)), notes="note",
            progress=progress, details=_autotag_weights)


def _autotag_weights(result) -> str:
    """One line per expert's weight, printed before the summary (which stays the last line)."""
    return "\n".join(f"weight {name}: {weight:.4f} ({result.hits[name]} of {result.coverage[name]} tagged media it "
                     "covers get a correct tag)" for name, weight in result.weights.items())


# The commands of these modules register themselves on `app` (imported here, after everything they use
# from this module is defined, so `giflens --help` lists them in this order).
from labeling import cli_dupes, cli_history, cli_audit  # noqa: E402,F401

def _reflow_help(typer_app: typer.Typer) -> None:
    """Rich prints a docstring's line breaks as they are, and these are wrapped for the source, not
    for the terminal: join each paragraph's lines so --help wraps at the terminal's width. Brackets
    are escaped: Rich would take Brad_Pitt_[m.0c6qh] for markup and print Brad_Pitt_."""
    import inspect

    from rich.markup import escape

    for info in typer_app.registered_commands:
        doc = info.help or inspect.getdoc(info.callback) or ""
        info.help = "\n\n".join(escape(" ".join(p.split())) for p in doc.split("\n\n"))


_reflow_help(app)
_reflow_help(import_app)


def _exit_on_sigterm(signum: int, _frame) -> None:
    raise Terminated(128 + signum)


def main() -> None:
    """The console script. SIGTERM (a stopped container, a killed job) ends the command like Ctrl-C:
    as an exception, so open transactions roll back and an export's or a cache entry's temporary
    folder is removed instead of being left beside the result."""
    import signal

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    app()


if __name__ == "__main__":
    main()
