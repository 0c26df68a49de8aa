"""`giflens` command line: every page of the app can be driven from here too."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from models.settings import Settings

app = typer.Typer(help="giflens: curate face and GIF embeddings.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)

DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Data folder (cache, SQLite store). Env: GIFLENS_DATA_DIR.")]
DatabaseUrl = Annotated[Optional[str], typer.Option("--database-url", help="SQLAlchemy URL. Env: GIFLENS_DATABASE_URL.")]


def make_settings(**overrides: object) -> Settings:
    """Environment first, then the options actually given on the command line."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[current]}"),
        console=console, transient=False,
    )


@app.callback()
def _root() -> None:
    """giflens: curate face and GIF embeddings."""


@app.command("ingest")
def ingest_command(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (searched recursively).")],
    data_dir: DataDir = None,
    frames: Annotated[Optional[int], typer.Option("--frames", min=1, max=512, help="Frames sampled per clip.")] = None,
    face_model: Annotated[Optional[str], typer.Option("--face-model", help="dlib-resnet-v1 or facenet-vggface2.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Ingest GIFs, videos and photos into cached face and GIF embeddings."""
    from embeddings.pipeline import ModelUnavailableError
    from labeling.ingest import ingest
    from models.registry import list_models

    settings = make_settings(data_dir=data_dir, frames=frames, face_model=face_model, database_url=database_url)
    if settings.face_model not in list_models("face"):
        raise typer.BadParameter(f"unknown face model {settings.face_model!r}; known: {', '.join(list_models('face'))}",
                                 param_hint="--face-model")
    with progress_bar() as progress:
        task = progress.add_task("ingest", total=None, current="")

        def advance(result) -> None:
            progress.update(task, advance=1, current=Path(result.path).name[:40])

        try:
            summary = ingest(paths, settings, on_start=lambda n: progress.update(task, total=n), on_result=advance)
        except ModelUnavailableError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
    for path, reason in summary.failures:
        console.print(f"[red]failed[/red] {reason}" if path in reason else f"[red]failed[/red] {path}: {reason}")
    typer.echo(summary.line())


@app.command("app")
def app_command(
    data_dir: DataDir = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port of the web app.")] = 8501,
    database_url: DatabaseUrl = None,
    headless: Annotated[bool, typer.Option("--headless/--browser", help="Do not open a browser window.")] = True,
) -> None:
    """Start the editors' app (Streamlit) on the data folder's store."""
    import os
    import subprocess
    import sys

    settings = make_settings(data_dir=data_dir, database_url=database_url)
    env = dict(os.environ, GIFLENS_DATA_DIR=str(Path(settings.data_dir).resolve()))
    if database_url:
        env["GIFLENS_DATABASE_URL"] = database_url
    script = Path(__file__).resolve().parents[1] / "app.py"
    typer.echo(f"giflens app on http://localhost:{port} (data folder {env['GIFLENS_DATA_DIR']})")
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
               "--server.headless", str(headless).lower(), "--browser.gatherUsageStats", "false"]
    raise typer.Exit(subprocess.call(command, env=env))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
