"""`giflens retrain`: a seed numpy or torch refuses is one `error:` line (was a
traceback), the progress bar moves through both head trainings epoch by epoch (it stood at step 0 of
2 while they ran), a training whose loss goes non-finite refuses the run and saves nothing (a head of
NaN weights was saved and deployed), the summary line names both candidates' holdout accuracies, and
`giflens predict` says when it replaces predictions a retrain head deployed.

Stores are real SQLite stores of a few dozen faces with synthetic 128-d embeddings (store_faces),
so each retrain takes well under a second."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import n_events
from test_recognition_calibration_and_ties import store_faces
from typer.testing import CliRunner

from labeling.classes import add_class
from labeling.cli import app
from labeling.db import open_store
from labeling.errors import ValidationError
from labeling.recognition import (read_snapshot, refresh_predictions, replaced_other_models, retrain, retrain_steps,
                                  training_set)
from models.celebrity_classifier import ClassifierError
from models.retrain_head import MAX_SEED, HeadParams, train_head

runner = CliRunner()
# a few dozen faces of 2-3 classes: too few impostors to measure a false-accept rate, said and beside the point
pytestmark = pytest.mark.filterwarnings("ignore::models.celebrity_classifier.CalibrationWarning")


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def small_store(tmp_path: Path, n_classes: int = 3, per_class: int = 8, seeded: int = 6):
    """(store, url, face ids by class): `seeded` confirmed faces per class, the rest undecided."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    rng = np.random.default_rng(15)
    centres = rng.normal(size=(n_classes, 128))
    store = open_store(url)
    _, faces = store_faces(store, [c + 0.05 * rng.normal(size=128) for c in centres for _ in range(per_class)])
    by_class = [faces[i * per_class:(i + 1) * per_class] for i in range(n_classes)]
    for i, ids in enumerate(by_class):
        add_class(store, f"Person {i}", "ann", seed_face_ids=ids[:seeded])
    return store, url, by_class


# -- 1. the seed ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 2**70, True, 1.0])
def test_a_seed_numpy_or_torch_refuses_is_refused_by_the_params_check(seed):
    with pytest.raises(ClassifierError, match=r"^seed must be an integer from 0 to 18446744073709551615, got "):
        HeadParams(seed=seed).check()


def test_the_seed_range_ends_are_accepted():
    rng = np.random.default_rng(0)
    x = np.concatenate([c + 0.05 * rng.normal(size=(4, 16)) for c in rng.normal(size=(2, 16))])
    HeadParams(seed=0).check()
    for seed in (2**40, MAX_SEED):  # past 2**32 too: numpy and torch take them, and a head seeded so stays reproducible
        head = train_head(x, ["a"] * 4 + ["b"] * 4, epochs=1, seed=seed, model_id="m")
        assert head.params.seed == seed


@pytest.mark.parametrize("seed", ["-1", str(2**64)])  # 2**64 is MAX_SEED + 1
def test_retrain_with_a_bad_seed_is_one_error_line_and_writes_nothing(tmp_path, seed):
    store, url, _ = small_store(tmp_path)
    events = n_events(store)
    result = invoke("retrain", "--data-dir", tmp_path / "data", "--database-url", url, "--seed", seed)
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"error: seed must be an integer from 0 to 18446744073709551615, got {seed}"
    assert n_events(store) == events and not (tmp_path / "data" / "models").exists()


# -- 2. progress through both trainings ----------------------------------------------------------------
def test_train_head_reports_every_epoch():
    rng = np.random.default_rng(1)
    x = np.concatenate([c + 0.05 * rng.normal(size=(4, 16)) for c in rng.normal(size=(2, 16))])
    seen: list[int] = []
    train_head(x, ["a"] * 4 + ["b"] * 4, epochs=5, model_id="m", on_epoch=seen.append)
    assert seen == [1, 2, 3, 4, 5]


def test_retrain_progress_moves_through_both_head_trainings(tmp_path):
    store, _, _ = small_store(tmp_path)
    seen: list[tuple[int, int]] = []
    retrain(store, tmp_path / "data", epochs=4, holdout_share=0.34, on_progress=lambda d, t: seen.append((d, t)))
    undecided = 3 * 2  # no tracks: store_faces stores single photos
    total = 2 * 4 + 2 + retrain_steps(4, 18, undecided)[1]
    assert {t for _, t in seen} == {total}
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[0] == 0 and done[-1] == total
    # the holdout head's epochs 1-4, its scoring (5), the refit's epochs (6-9), both models saved (10)
    assert set(range(0, 2 * 4 + 3)) <= set(done)


# -- 3. a diverging training -----------------------------------------------------------------------------
def test_a_diverging_head_training_raises_instead_of_returning_nan_weights():
    rng = np.random.default_rng(2)
    x = np.concatenate([c + 0.05 * rng.normal(size=(4, 16)) for c in rng.normal(size=(2, 16))])
    # a learning rate only train_head takes: a lambda that large is refused by the params check (next test)
    with pytest.raises(ClassifierError, match=r"^training diverged: loss is (nan|inf) at epoch \d \(a center-loss "
                                              r"lambda or learning rate too large\)$"):
        train_head(x, ["a"] * 4 + ["b"] * 4, learning_rate=1e30, epochs=3, model_id="m")


@pytest.mark.parametrize("value", [1e39, 1e308])
def test_a_center_loss_lambda_past_float32_is_refused_before_training(value):
    with pytest.raises(ClassifierError, match=r"^center_loss_lambda must be a finite number >= 0, got .* \(at most "
                                              r"3\.403e\+38: the head trains in float32\)$"):
        HeadParams(center_loss_lambda=value).check()
    HeadParams(center_loss_lambda=1e38).check()


def test_retrain_refuses_a_lambda_that_would_diverge_and_saves_nothing(tmp_path):
    """1e308 trained a head of NaN weights and saved it; now the params check refuses it, nothing read or written."""
    store, url, _ = small_store(tmp_path)
    events = n_events(store)
    with pytest.raises(ValidationError, match="the head trains in float32"):
        retrain(store, tmp_path / "data", center_loss_lambda=1e308, epochs=3, holdout_share=0.34)
    result = invoke("retrain", "--data-dir", tmp_path / "data", "--database-url", url, "--epochs", "3",
                    "--holdout", "0.34", "--center-loss-lambda", "1e308")
    assert result.exit_code == 1 and "error: center_loss_lambda must be" in result.output, result.output
    assert n_events(store) == events and not (tmp_path / "data" / "models").exists()


# -- 4. both candidates' accuracies on the line -----------------------------------------------------------
def test_retrain_line_names_both_holdout_accuracies_and_still_ends_with_before_after(tmp_path):
    store, _, _ = small_store(tmp_path)
    result = retrain(store, tmp_path / "data", epochs=3, holdout_share=0.34)
    line = result.line()
    pairs = dict(pair.split("=", 1) for pair in line.split(" "))
    assert pairs["centroid_accuracy"] == f"{result.comparison['centroid_accuracy']:.4f}"
    assert pairs["head_accuracy"] == f"{result.comparison['head_accuracy']:.4f}"
    assert re.search(r" faces=\d+ changed=\d+ event=\S+ before=\S+ after=\S+$", line), line
    assert line.index("head_accuracy=") < line.index("before=")


# -- 5. predict replacing a deployed head's predictions ----------------------------------------------------
def test_predict_says_it_replaces_predictions_a_retrain_head_deployed(tmp_path):
    store, url, _ = small_store(tmp_path)
    data_dir = tmp_path / "data"
    data = training_set(read_snapshot(store))
    head = train_head(data.vectors, data.labels, epochs=3, model_id=data.model_id)
    deployed = refresh_predictions(store, predictor=head, data_dir=data_dir, faces="undecided")  # as retrain does
    assert deployed.changed == 6 and deployed.model_version.startswith("head-")
    result = invoke("predict", "--data-dir", data_dir, "--database-url", url, "--undecided-only")
    assert result.exit_code == 0, result.output
    model = dict(p.split("=", 1) for p in result.stdout.strip().splitlines()[-1].split(" "))["model"]
    assert model.startswith("centroid-knn-")
    assert (f"note 6 face(s) had predictions of {head.version} (deployed by retrain): replaced by {model} "
            "(a face keeps one prediction, the latest)") in " ".join(result.stderr.split())
    # a head replacing another head's predictions (retrain deploying again) or its own: no note
    faces = read_snapshot(store).faces
    faces = faces.assign(model_version=head.version)
    assert replaced_other_models(faces, data_dir, data.model_id, "head-000000000000") == []
    assert replaced_other_models(faces, None, data.model_id, head.version) == []
    assert replaced_other_models(faces, None, data.model_id, model)[0].startswith(f"{len(faces)} face(s) had ")
