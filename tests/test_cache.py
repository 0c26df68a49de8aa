"""The content-addressed cache: namespaces, atomic entries, recovery from a killed writer."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np

from embeddings.cache import EmbeddingCache, namespace_for, sha256_file


def test_namespace_changes_with_model_or_params():
    a = namespace_for("dlib-resnet-v1", {"size": 150, "flip": True})
    assert a == namespace_for("dlib-resnet-v1", {"flip": True, "size": 150})
    assert a != namespace_for("dlib-resnet-v1", {"size": 160, "flip": True})
    assert a != namespace_for("facenet-vggface2", {"size": 150, "flip": True})
    assert a.startswith("dlib-resnet-v1-")


def test_round_trip_arrays_meta_files(tmp_path):
    cache = EmbeddingCache(tmp_path)
    sha = "ab" * 32
    assert cache.get("ns", sha) is None
    vec = np.random.default_rng(0).normal(size=(3, 128)).astype(np.float32)
    cache.put("ns", sha, {"faces": 3}, {"embedding": vec}, {"face_000.jpg": b"jpeg"})
    entry = cache.get("ns", sha)
    assert entry.meta == {"faces": 3}
    np.testing.assert_array_equal(entry.arrays["embedding"], vec)
    assert entry.file("face_000.jpg").read_bytes() == b"jpeg"
    assert entry.path == tmp_path / "ns" / "ab" / sha


def test_entry_without_meta_is_a_miss_and_gets_replaced(tmp_path):
    cache = EmbeddingCache(tmp_path)
    sha = "cd" * 32
    half = cache.entry_dir("ns", sha)
    half.mkdir(parents=True)
    (half / "arrays.npz").write_bytes(b"partial")
    assert cache.get("ns", sha) is None
    cache.put("ns", sha, {"ok": True})
    assert cache.get("ns", sha).meta == {"ok": True}


def test_corrupt_entry_is_dropped(tmp_path):
    """Garbage, an emptied file or one cut in half (a zip without its directory): each is a miss and
    the entry is dropped to be recomputed, never an error that stops the batch."""
    cache = EmbeddingCache(tmp_path)
    sha = "ef" * 32
    for damage in (lambda data: b"not a zip", lambda data: b"", lambda data: data[: len(data) // 2]):
        cache.put("ns", sha, {"ok": True}, {"x": np.arange(5000.0)})
        arrays = cache.entry_dir("ns", sha) / "arrays.npz"
        arrays.write_bytes(damage(arrays.read_bytes()))
        assert cache.get("ns", sha) is None
        assert not cache.entry_dir("ns", sha).exists()


def test_writer_killed_mid_entry_leaves_no_entry_and_tmp_is_swept(tmp_path):
    """A real process is killed (SIGKILL) after writing half an entry."""
    script = textwrap.dedent(
        f"""
        import os, signal, numpy as np
        from embeddings import cache as c
        real = c._write_synced
        def dying(path, data):
            if path.name == "meta.json":
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, data)
        c._write_synced = dying
        c.EmbeddingCache({str(tmp_path)!r}).put("ns", "{'aa' * 32}", {{"x": 1}}, {{"v": np.ones(4)}}, {{"f.jpg": b"1"}})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd())
    assert proc.returncode != 0
    assert any((tmp_path / ".tmp").iterdir())
    cache = EmbeddingCache(tmp_path)  # a new run sweeps the dead writer's folder
    assert cache.get("ns", "aa" * 32) is None
    assert not any((tmp_path / ".tmp").iterdir())


def test_sha256_file(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"hello")
    assert sha256_file(p) == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
