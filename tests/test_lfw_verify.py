"""bench/lfw_verify.py without models: pairs files from any `<Person>/*` folder, and the 10-fold protocol."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import lfw_verify
from bench.lfw_verify import best_threshold, fold_accuracies, image_path, make_pairs, read_pairs, write_pairs


def _people(root: Path, people: dict[str, list[str]]) -> Path:
    """Tiny real images (4x4, JPEG or PNG by suffix) under the given file names."""
    for person, files in people.items():
        (root / person).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(files):
            fmt = "PNG" if name.lower().endswith(".png") else "JPEG"
            Image.new("RGB", (4, 4), (40 * i % 256, len(person), 0)).save(root / person / name, format=fmt)
    return root


def _arbitrary_names(root: Path, n_people: int = 12) -> Path:
    names = ["a.jpg", "IMG_3.JPG", "x.png", "photo 10.jpeg", "Z.PNG", "b.Jpg"]
    people = {f"Person_{k:02d}": names[: 1 + k % len(names)] for k in range(n_people)}
    _people(root, people)
    (root / "Person_00" / "notes.txt").write_text("not an image")
    (root / "Person_01" / ".hidden.jpg").write_bytes(b"")
    (root / "README.md").write_text("a file at the top is not a person")
    (root / "Nobody").mkdir()  # a person folder without images takes no part
    return root


def test_image_numbers_name_the_sorted_image_files(tmp_path):
    root = _arbitrary_names(tmp_path)
    files = [image_path(root, "Person_05", n).name for n in range(1, 7)]
    assert files == sorted(["a.jpg", "IMG_3.JPG", "x.png", "photo 10.jpeg", "Z.PNG", "b.Jpg"])
    assert lfw_verify.person_images(root, "Person_00") == [root / "Person_00" / "a.jpg"]  # no .txt
    assert lfw_verify.person_images(root, "Person_01") == [root / "Person_01" / "IMG_3.JPG", root / "Person_01" / "a.jpg"]
    with pytest.raises(FileNotFoundError, match="no image 3"):
        image_path(root, "Person_01", 3)


def test_in_an_lfw_folder_numbers_are_lfw_names_and_a_missing_one_stays_missing(tmp_path):
    """Official pairs files name LFW's Name_NNNN.jpg: in a folder holding such names, image n is
    Name_{n:04d}.jpg or nothing, never another photo standing in (which could pair a photo with itself)."""
    _people(tmp_path, {"Bob": ["Bob_0002.jpg", "Bob_0004.jpg", "a.jpg"], "Al": ["Al_0001.jpg", "Al_0002.jpg"]})
    assert [image_path(tmp_path, "Bob", n).name for n in (2, 4)] == ["Bob_0002.jpg", "Bob_0004.jpg"]
    for missing in (1, 3):
        with pytest.raises(FileNotFoundError, match=f"no image {missing}"):
            image_path(tmp_path, "Bob", missing)
    assert [image_path(tmp_path, "Al", n).name for n in (1, 2)] == ["Al_0001.jpg", "Al_0002.jpg"]
    # pairs are drawn from the numbers that exist
    folds = lfw_verify.make_pairs(tmp_path, 1, 2, seed=0)
    assert {(a, i, j) for a, i, _, j in folds[0][0]} <= {("Bob", 2, 4), ("Al", 1, 2)}
    for a, i, b, j in folds[0][0] + folds[0][1]:
        assert image_path(tmp_path, a, i).is_file() and image_path(tmp_path, b, j).is_file()


def test_make_pairs_round_trip_on_arbitrary_file_names(tmp_path):
    root = _arbitrary_names(tmp_path / "people")
    folds = make_pairs(root, folds=3, per_fold=5, seed=1)
    assert make_pairs(root, folds=3, per_fold=5, seed=1) == folds  # seeded
    pairs_file = tmp_path / "pairs.txt"
    write_pairs(pairs_file, folds, 5)
    assert pairs_file.read_text().splitlines()[0] == "3\t5"
    assert read_pairs(pairs_file) == [(list(m), list(mm)) for m, mm in folds]

    fold_people = []
    for matched, mismatched in folds:
        assert len(matched) == len(set(matched)) == 5 and len(mismatched) == len(set(mismatched)) == 5
        for a, i, b, j in matched:
            pa, pb = image_path(root, a, i), image_path(root, b, j)
            assert a == b and pa.is_file() and pb.is_file() and pa != pb and pa.parent.name == a
        for a, i, b, j in mismatched:
            pa, pb = image_path(root, a, i), image_path(root, b, j)
            assert a != b and pa.is_file() and pb.is_file() and (pa.parent.name, pb.parent.name) == (a, b)
        fold_people.append({n for a, _, b, _ in matched + mismatched for n in (a, b)})
    for k, people in enumerate(fold_people):
        assert "Nobody" not in people
        assert all(not people & other for other in fold_people[k + 1 :]), "folds share people"


def test_make_pairs_can_use_every_possible_pair(tmp_path):
    """Exactly as many pairs as exist: found, not an endless loop."""
    _people(tmp_path, {"A": ["1.jpg", "2.jpg", "3.jpg"], "B": ["x.png"]})
    [(matched, mismatched)] = make_pairs(tmp_path, folds=1, per_fold=3, seed=0)
    assert [(i, j) for _, i, _, j in matched] == [(1, 2), (1, 3), (2, 3)]
    assert {(a, b) for a, _, b, _ in mismatched} <= {("A", "B"), ("B", "A")}


@pytest.mark.parametrize("people, folds, per_fold, message", [
    ({"A": ["1.jpg"], "B": ["1.jpg"], "C": ["1.jpg"]}, 1, 1, r"fold 1 of 1 can make only 0 distinct matched pairs"),
    ({"A": ["1.jpg", "2.jpg"], "B": ["1.jpg"], "C": ["1.png"]}, 1, 2, r"only 1 distinct matched pairs .* 2 requested"),
    ({"A": ["1.jpg", "2.jpg"], "B": ["1.jpg", "2.jpg"], "C": ["1.jpg"]}, 2, 1, r"fold \d of 2 has 1 person, 2 are needed"),
    ({"A": ["1.jpg", "2.jpg"], "B": ["1.jpg", "2.jpg"]}, 3, 1, r"fold 1 of 3 has 1 person"),
    ({"A": ["notes.txt"]}, 1, 1, r"0 people with photos split into 1 folds; fold 1 of 1 has 0 people"),
    ({"A": [f"{i}.jpg" for i in range(10)], "B": ["b.jpg"]}, 1, 30, r"only 20 distinct mismatched pairs .* 30 requested"),
    ({"A": ["1.jpg", "2.jpg"], "B": ["1.jpg"]}, 0, 1, r"at least 1"),
])
def test_impossible_requests_say_which_fold_and_why(tmp_path, people, folds, per_fold, message):
    _people(tmp_path, people)
    with pytest.raises(ValueError, match=message) as err:
        make_pairs(tmp_path, folds=folds, per_fold=per_fold, seed=0)
    assert folds < 1 or ("--folds" in str(err.value) and "--per-fold" in str(err.value))


def test_cli_reports_an_impossible_request_without_a_traceback(tmp_path, monkeypatch, capsys):
    _people(tmp_path / "people", {"A": ["1.jpg", "2.jpg"], "B": ["x.png"]})
    argv = ["lfw_verify.py", "--make-pairs", "--pairs", str(tmp_path / "p.txt"), "--images", str(tmp_path / "people")]
    monkeypatch.setattr("sys.argv", argv + ["--per-fold", "5"])
    with pytest.raises(SystemExit) as exit_:
        lfw_verify.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "fold 1 of 10 has 1 person" in err and "Traceback" not in err
    _people(tmp_path / "four", {"A": ["1.jpg", "2.jpg"], "B": ["x.png"], "C": ["1.jpg", "2.jpg"], "D": ["y.png"]})
    monkeypatch.setattr("sys.argv", ["lfw_verify.py", "--make-pairs", "--pairs", str(tmp_path / "p.txt"), "--images",
                                     str(tmp_path / "four"), "--folds", "2", "--per-fold", "1"])
    lfw_verify.main()  # the fewest folds cross-validation needs
    assert [len(fold) for fold in read_pairs(tmp_path / "p.txt")[0]] == [1, 1]


def test_best_threshold_separates_separable_distances():
    dist = np.array([0.1, 0.2, 0.8, 0.9])
    same = np.array([True, True, False, False])
    t = best_threshold(dist, same)
    assert 0.2 < t < 0.8 and ((dist < t) == same).all()


def test_fold_accuracies_perfectly_separable_is_one_per_fold():
    rng = np.random.default_rng(0)
    dists, sames = [], []
    for _ in range(10):
        dists.append(np.concatenate([rng.uniform(0.0, 0.4, 30), rng.uniform(0.6, 1.0, 30)]))
        sames.append(np.array([True] * 30 + [False] * 30))
    accs, thresholds = fold_accuracies(dists, sames)
    assert accs == [1.0] * 10
    assert all(0.4 <= t <= 0.6 for t in thresholds)


def test_fold_accuracies_chooses_the_threshold_on_the_other_folds():
    """Fold 3's own best threshold would be 0.75, but the other folds put it at 0.5: it scores 0.5."""
    regular = (np.array([0.2, 0.3, 0.7, 0.8]), np.array([True, True, False, False]))
    odd = (np.array([0.6, 0.7, 0.8, 0.9]), np.array([True, True, False, False]))
    dists, sames = [regular[0]] * 2 + [odd[0]], [regular[1]] * 2 + [odd[1]]
    assert best_threshold(*odd) == pytest.approx(0.75)
    accs, thresholds = fold_accuracies(dists, sames)
    # folds 1 and 2 train on a regular fold plus the odd one: 0.65 and 0.75 both score 7/8, the first is taken
    assert thresholds == pytest.approx([0.65, 0.65, 0.5])
    assert accs == [1.0, 1.0, 0.5]


def test_error_ratio_is_undefined_when_the_baseline_makes_no_error():
    import math
    import warnings

    assert lfw_verify.error_ratio(0.98, 0.96) == pytest.approx(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old division printed inf with a RuntimeWarning
        assert math.isnan(lfw_verify.error_ratio(0.75, 1.0))


def test_recognition_bench_refuses_fewer_people_than_its_open_set_draw_needs():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, str(root / "bench" / "recognition.py"), "--max-people", "3"],
                         capture_output=True, text=True, cwd=root)
    assert run.returncode == 2
    assert "--max-people needs at least 4" in run.stderr
    assert "Traceback" not in run.stderr
