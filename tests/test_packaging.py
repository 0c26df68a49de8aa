"""The image and the repository keep what the README promises out of them: an editor following "Single
sign-on" writes `.streamlit/secrets.toml` beside `config.toml`, which the Dockerfile copies as a folder."""
from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECRETS = ".streamlit/secrets.toml"


def _docker_ignored(path: str) -> bool:
    """Whether a .dockerignore pattern excludes `path` (plain patterns and `**/` prefixes, as ours use)."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/"))
               or path.startswith(p.rstrip("/") + "/") for p in patterns)


def test_login_secrets_are_ignored_by_git() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "check-ignore", "-q", SECRETS], cwd=ROOT)
    assert done.returncode == 0, f"{SECRETS} is not git-ignored"


def test_login_secrets_never_reach_the_image() -> None:
    copied = re.findall(r"^COPY\s+(.+?)\s+\S+\s*$", (ROOT / "Dockerfile").read_text(), re.M)
    assert any(".streamlit" in c.split() for c in copied), "the Dockerfile no longer copies .streamlit"
    assert _docker_ignored(SECRETS)
    assert not _docker_ignored(".streamlit/config.toml")


def test_dockerfile_copies_what_exists_and_every_package() -> None:
    """A COPY of a path that was renamed fails the build only where a daemon runs (not in CI here)."""
    sources = [s for c in re.findall(r"^COPY\s+(.+?)\s+\S+\s*$", (ROOT / "Dockerfile").read_text(), re.M)
               for s in c.split()]
    assert sources and all((ROOT / s).exists() for s in sources), sources
    packages = re.search(r'packages\s*=\s*\[([^\]]*)\]', (ROOT / "pyproject.toml").read_text()).group(1)
    for package in re.findall(r'"([^"]+)"', packages):
        assert package in sources, f"the image lacks the package {package}"
