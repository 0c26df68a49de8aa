"""`giflens app` as an editor starts it: a real server process on a real port, on the given data folder."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from sqlalchemy import inspect

from labeling.db import make_engine

REPO = Path(__file__).resolve().parents[1]
START_BOUND_S = 300  # these bounds only keep a broken start or stop from hanging the suite; never a measure of speed
STOP_BOUND_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _giflens() -> list[str]:
    """The installed console script when there is one (what the README runs), else the module."""
    script = Path(sys.executable).with_name("giflens")
    return [str(script)] if script.exists() else [sys.executable, "-m", "labeling.cli"]


def _health(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as response:
            return response.read().decode().strip()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_app_command_serves_the_app_on_the_data_folder(tmp_path):
    data_dir, port = tmp_path / "data", _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIFLENS_")}  # only the options given count
    proc = subprocess.Popen([*_giflens(), "app", "--data-dir", str(data_dir), "--port", str(port)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + START_BOUND_S
        answer = None
        while answer != "ok" and proc.poll() is None and time.monotonic() < deadline:
            answer = _health(port)
            if answer != "ok":
                time.sleep(0.5)
        assert answer == "ok", f"no health answer (exit code {proc.poll()})"
        # the store was created and migrated in the data folder before the server started
        db = data_dir / "giflens.db"
        assert db.is_file()
        assert {"media", "face", "audit_event", "celebrity_class"} <= set(inspect(make_engine(f"sqlite:///{db}"))
                                                                             .get_table_names())
    finally:
        proc.terminate()  # SIGTERM to `giflens app`, which passes it on to the server
        try:
            output, _ = proc.communicate(timeout=STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, output
    assert f"giflens app on http://localhost:{port} (data folder {data_dir.resolve()})" in output
    assert _health(port) is None  # the server went down with it: nothing left listening


def test_the_servers_upload_limit_follows_the_settings(tmp_path):
    """The browser refuses an upload over GIFLENS_MAX_FILE_BYTES, as the Ingest page would."""
    from labeling.cli import streamlit_command
    from models.settings import Settings

    command = streamlit_command(REPO / "app.py", Settings(data_dir=tmp_path, max_file_bytes=5 * 2**20 + 1), 8600, True)
    assert command[command.index("--server.maxUploadSize") + 1] == "6"
    assert command[command.index("--server.port") + 1] == "8600"
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4] == str(REPO / "app.py")
