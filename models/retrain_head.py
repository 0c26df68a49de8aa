"""Retrain a small classification head on curated face embeddings: softmax cross-entropy + center loss.

Why: GIPHY's detector trained ResNet-50 with softmax plus center loss (Wen et al., ECCV 2016) so
that each celebrity's features gather around a learned center. Editors' curated labels arrive as
embeddings already (the face embedder stays frozen), so retraining is a head on top: a linear
feature layer (`hidden=None`) or a one-hidden-layer MLP with PReLU as in Wen et al., followed by
a linear softmax layer. Center loss acts on that feature layer; the centers are not learned by
the optimiser but moved toward the batch's features with rate `center_alpha` (Wen et al., Alg. 1):

    c_j <- c_j - alpha * sum_i [y_i = j] (c_j - f_i) / (1 + sum_i [y_i = j])

Inputs are standardised with the training mean and spread first: dlib embeddings of different
people are only ~0.1 apart in cosine distance, which a linear layer with weight decay cannot
separate at their raw scale.

The open-set rule is the classifier's (models.celebrity_classifier): a face is UNKNOWN when its
cosine distance to the predicted class's embedding centroid exceeds a threshold calibrated
leave-one-out on the training faces. The head's own features are fitted to the training faces,
so distances in them would understate how far new faces fall; the embedding space is honest.

`compare_on_holdout` answers the question an ML engineer asks before switching: does the head beat
the centroid classifier on held-out approved labels?
"""
from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from models.atomic_folder import atomic_folder
from models.celebrity_classifier import (UNKNOWN, CentroidKnnClassifier, ClassifierError, as_embeddings, as_labels,
                                         calibration_set, check_model_id,
                                         class_centroids, data_digest, distances_to, ordered_training_set,
                                         leave_one_out_distances, open_set_threshold, require_held_out, softmax_rows,
                                         top_pairs)

HEAD_FILE, META_FILE = "head.pt", "meta.json"
MAX_SEED = 2**64 - 1  # torch.manual_seed refuses a seed past it, numpy's default_rng a negative one
# the head trains in float32: a center-loss weight past its largest number makes the loss inf at once
MAX_CENTER_LOSS_LAMBDA = float(np.finfo(np.float32).max)

OnEpoch = Callable[[int], None]  # called with the number of epochs trained so far (1 .. epochs)
# on_step(text): what a long stage is doing while its count cannot move ("fitting the centroid classifier"): the
# first epoch waits for torch to load, seconds in which a bar said only "0/86". The one such type: recognition's
# retrain and auto_tagging's autotag take it too (the models layer is the one both labeling modules may import)
OnStep = Callable[[str], None]


def epoch_steps(doing: str, epochs: int, on_epoch: OnEpoch | None, on_step: OnStep | None) -> OnEpoch:
    """An on_epoch that also says the epoch under way, "<doing>, epoch 3/40", after `on_step(doing + ", epoch 1/40")`
    is said at once (the first epoch's wait). Why here: the holdout training and the refit speak alike."""
    def said(done: int) -> None:
        if on_epoch is not None:
            on_epoch(done)
        if on_step is not None and done < epochs:
            on_step(f"{doing}, epoch {done + 1}/{epochs}")

    said_first = on_step or (lambda text: None)
    said_first(f"{doing}, epoch 1/{epochs}")
    return said


@dataclass(frozen=True)
class HeadParams:
    """Everything that decides the trained head besides the data (part of its version)."""

    hidden: int | None = None
    center_loss_lambda: float = 0.01
    center_alpha: float = 0.5
    epochs: int = 40
    batch_size: int = 128
    learning_rate: float = 0.01
    weight_decay: float = 1e-4
    seed: int = 0
    target_far: float = 0.01
    min_faces_per_class: int = 2

    def check(self) -> None:
        if self.hidden is not None and (not isinstance(self.hidden, int) or self.hidden < 1):
            raise ClassifierError(f"hidden must be None (linear head) or a positive width, got {self.hidden!r}")
        if not 0 <= self.center_loss_lambda <= MAX_CENTER_LOSS_LAMBDA:  # NaN fails every comparison: refused too
            raise ClassifierError(f"center_loss_lambda must be a finite number >= 0, got {self.center_loss_lambda} "
                                  f"(at most {MAX_CENTER_LOSS_LAMBDA:.4g}: the head trains in float32)")
        if not 0 < self.center_alpha <= 1:
            raise ClassifierError(f"center_alpha must be in (0, 1], got {self.center_alpha}")
        for name in ("epochs", "batch_size", "min_faces_per_class"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ClassifierError(f"{name} must be a positive integer, got {value!r}")
        if not 0 < self.learning_rate < math.inf or not 0 <= self.weight_decay < math.inf:
            raise ClassifierError(f"learning_rate must be > 0 and weight_decay >= 0, got "
                                  f"{self.learning_rate}, {self.weight_decay}")
        if not 0 < self.target_far < 1:
            raise ClassifierError(f"target_far must be in (0, 1), got {self.target_far}")
        # why here: a negative seed reached np.random.default_rng (the holdout split) and one past 2**64
        # torch.manual_seed, each a traceback after the store was read; bool is an int to Python, not a seed
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ClassifierError(f"seed must be an integer from 0 to {MAX_SEED}, got {self.seed!r}")


def _build_net(dim: int, n_classes: int, hidden: int | None):
    """Standardise -> feature layer (linear, or linear + PReLU) -> linear logits; returns (net, feature dim)."""
    import torch
    from torch import nn

    class HeadNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            width = hidden or dim
            self.register_buffer("input_mean", torch.zeros(dim))
            self.register_buffer("input_scale", torch.ones(dim))
            self.feature = nn.Linear(dim, width)
            self.activation = nn.PReLU() if hidden else nn.Identity()
            self.classifier = nn.Linear(width, n_classes)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = self.activation(self.feature((x - self.input_mean) / self.input_scale))
            return features, self.classifier(features)

    return HeadNet(), hidden or dim


@dataclass
class HeadModel:
    """A trained head plus what it needs to answer like the centroid classifier (classes, centroids, threshold)."""

    net: Any  # torch.nn.Module
    classes_: np.ndarray
    model_id_: str
    params: HeadParams
    centroids_: np.ndarray  # embedding-space class centroids, for the open-set rule
    centers_: np.ndarray  # center-loss centers in feature space (kept for inspection)
    threshold_: float
    false_accept_rate_: float
    genuine_accept_rate_: float
    data_digest_: str
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    calibration_: dict[str, Any] | None = None  # set by calibrate(): digest and sizes of the calibration set
    held_out_genuine_: np.ndarray | None = None  # train_head's leave-one-out genuine distances (not saved)

    @property
    def version(self) -> str:
        """Stable id: training data (any row order), params and embedding model; the seed makes training repeatable.

        A recalibrated head also names its calibration set: same weights, another threshold, other answers.
        """
        fields = {"data": self.data_digest_, "params": asdict(self.params), "model_id": self.model_id_}
        if self.calibration_ is not None:  # only then: heads saved before calibrate() existed keep their versions
            fields["calibration"] = self.calibration_["digest"]
        payload = json.dumps(fields, sort_keys=True)
        return f"head-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"

    def calibrate(self, vectors: Any, labels: Sequence[str] | None, model_id: str,
                  training: bool = False) -> "HeadModel":
        """Recalibrate the open-set threshold on a separate set, as CentroidKnnClassifier.calibrate does.

        Why the head has it too: its open-set rule is the classifier's (embedding-space centroids and
        a threshold), so faces editors marked unknown must move its threshold the same way, or the
        head and the classifier are compared, and deployed, on different rules. `training` as there: the
        set holds the faces trained on, and the held-out genuine distances of train_head stand.
        """
        check_model_id(self.model_id_, model_id)
        x, y, genuine, impostor = calibration_set(vectors, labels, self.centroids_, self.classes_)
        if training:
            genuine = require_held_out(self.held_out_genuine_)
        self.threshold_, self.false_accept_rate_, self.genuine_accept_rate_ = open_set_threshold(
            genuine, impostor, self.params.target_far, stacklevel=3,  # a CalibrationWarning names the caller's line
            model_id=self.model_id_)
        self.calibration_ = {"digest": data_digest(x, y), "genuine": int(len(genuine)), "impostor": int(len(impostor))}
        return self

    # -- predicting ------------------------------------------------------------------------
    def _forward(self, vectors: Any, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        import torch

        check_model_id(self.model_id_, model_id)
        x = as_embeddings(vectors, self.centroids_.shape[1])
        self.net.eval()
        with torch.no_grad():
            _, logits = self.net(torch.from_numpy(x))
        return x, softmax_rows(logits.double().numpy())

    def predict_proba(self, vectors: Any, model_id: str) -> np.ndarray:
        """(n, n_classes) softmax probabilities, columns in `classes_` order (closed-set)."""
        return self._forward(vectors, model_id)[1]

    def predict_top(self, vectors: Any, model_id: str, top: int = 5) -> list[list[tuple[str, float]]]:
        return top_pairs(self.predict_proba(vectors, model_id), self.classes_, top)

    def predict(self, vectors: Any, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(labels, confidences); UNKNOWN when the face is farther than threshold_ from its class's centroid."""
        x, proba = self._forward(vectors, model_id)
        best = proba.argmax(axis=1)
        distance = distances_to(x, self.centroids_, best)
        labels = np.where(distance <= self.threshold_, self.classes_[best], UNKNOWN).astype(object)
        return labels, proba[np.arange(len(best)), best]

    # -- persistence -----------------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        """`<folder>/<version>/head.pt` (tensors only) + `meta.json`; returns the version folder.

        Versions never overwrite each other: saving the same version again replaces it with
        identical content, a different version gets its own folder.
        """
        import torch

        target = Path(folder) / self.version
        with atomic_folder(target) as tmp:
            state = {f"net.{k}": v for k, v in self.net.state_dict().items()}
            state["centroids"] = torch.from_numpy(self.centroids_)
            state["centers"] = torch.from_numpy(self.centers_)
            buffer = io.BytesIO()
            torch.save(state, buffer)
            (tmp / HEAD_FILE).write_bytes(buffer.getvalue())
            meta = {"kind": "head", "version": self.version, "model_id": self.model_id_,
                    "classes": self.classes_.tolist(), "params": asdict(self.params),
                    "dim": int(self.centroids_.shape[1]), "threshold": self.threshold_,
                    "false_accept_rate": self.false_accept_rate_, "genuine_accept_rate": self.genuine_accept_rate_,
                    "data_digest": self.data_digest_, "calibration": self.calibration_, "metrics": self.metrics,
                    "created_at": self.created_at,
                    "head_sha256": hashlib.sha256(buffer.getvalue()).hexdigest(), "torch": torch.__version__}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        return target

    @classmethod
    def load(cls, version_folder: Path) -> "HeadModel":
        """Load `<folder>/<version>/`; the weights must match the checksum and the metadata its version."""
        import torch

        version_folder = Path(version_folder)
        if not (version_folder / META_FILE).is_file() or not (version_folder / HEAD_FILE).is_file():
            raise ClassifierError(f"no saved head in {version_folder} (expected {HEAD_FILE} and {META_FILE})")
        meta = json.loads((version_folder / META_FILE).read_text(encoding="utf-8"))
        raw = (version_folder / HEAD_FILE).read_bytes()
        if hashlib.sha256(raw).hexdigest() != meta["head_sha256"]:
            raise ClassifierError(f"{version_folder / HEAD_FILE} is damaged: its checksum does not match meta.json")
        state = torch.load(io.BytesIO(raw), weights_only=True)
        params = HeadParams(**meta["params"])
        classes = np.asarray(meta["classes"], dtype=str)
        net, _ = _build_net(meta["dim"], len(classes), params.hidden)
        net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        head = cls(net=net, classes_=classes, model_id_=meta["model_id"], params=params,
                   centroids_=state["centroids"].numpy(), centers_=state["centers"].numpy(),
                   threshold_=float(meta["threshold"]), false_accept_rate_=meta["false_accept_rate"],
                   genuine_accept_rate_=meta["genuine_accept_rate"], data_digest_=meta["data_digest"],
                   metrics=meta["metrics"], created_at=meta["created_at"], calibration_=meta.get("calibration"))
        if head.version != meta["version"]:
            raise ClassifierError(f"{version_folder} is damaged: its metadata gives version {head.version}, "
                                  f"it says {meta['version']}")
        return head


class _Adam:
    """Adam (Kingma & Ba) with L2 weight decay added to the gradient, as torch.optim.Adam does.

    Written out because constructing any torch.optim optimiser imports torch._dynamo, which costs
    4-6 s per process on these machines: longer than training the head itself.
    """

    def __init__(self, parameters: list, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        import torch

        self.parameters, self.lr, self.weight_decay, self.betas, self.eps = parameters, lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in parameters]
        self.v = [torch.zeros_like(p) for p in parameters]
        self.steps = 0

    def step(self) -> None:
        import torch

        self.steps += 1
        b1, b2 = self.betas
        with torch.no_grad():
            for p, m, v in zip(self.parameters, self.m, self.v):
                g = p.grad + self.weight_decay * p if self.weight_decay else p.grad
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v / (1 - b2 ** self.steps)).sqrt_().add_(self.eps)
                p.addcdiv_(m, denom, value=-self.lr / (1 - b1 ** self.steps))
                p.grad = None


def _diverged(epoch: int, loss: float, net: Any, centers: Any) -> str | None:
    """Why training cannot go on after `epoch` (its mean loss `loss`), or None while loss and weights are finite.

    Why checked every epoch: a huge center-loss weight (1e308) overflows the loss to inf and the
    gradients to NaN; Adam then writes NaN into every weight, and such a head was saved (and could be
    deployed) as if trained. Stopping at the first bad epoch names it and saves nothing."""
    import torch

    if not math.isfinite(loss):
        what = f"loss is {loss}"
    elif not (all(bool(torch.isfinite(p).all()) for p in net.parameters()) and bool(torch.isfinite(centers).all())):
        what = "weights are not finite"
    else:
        return None
    return f"training diverged: {what} at epoch {epoch} (a center-loss lambda or learning rate too large)"


def _train_net(x: np.ndarray, index: np.ndarray, n_classes: int, params: HeadParams, on_epoch: OnEpoch | None = None):
    """Minibatch Adam on cross-entropy + lambda * center loss; returns (net, centers, last epoch's mean losses).

    on_epoch(done) after each epoch, so a progress bar moves while the head trains. Raises
    ClassifierError as soon as an epoch's loss or the weights are not finite (`_diverged`).
    """
    import torch
    import torch.nn.functional as F

    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's global RNG
        torch.manual_seed(params.seed)
        net, width = _build_net(x.shape[1], n_classes, params.hidden)
        xt, yt = torch.from_numpy(x), torch.from_numpy(index.astype(np.int64))
        net.input_mean.copy_(xt.mean(dim=0))
        net.input_scale.copy_(xt.std(dim=0).clamp_min(1e-6))
        centers = torch.zeros(n_classes, width)
        optimiser = _Adam(list(net.parameters()), lr=params.learning_rate, weight_decay=params.weight_decay)
        generator = torch.Generator().manual_seed(params.seed)
        losses = {"cross_entropy": float("nan"), "center": float("nan")}
        net.train()
        for epoch in range(1, params.epochs + 1):
            order = torch.randperm(len(xt), generator=generator)
            ce_sum = center_sum = 0.0
            for start in range(0, len(xt), params.batch_size):
                batch = order[start:start + params.batch_size]
                features, logits = net(xt[batch])
                y = yt[batch]
                ce = F.cross_entropy(logits, y)
                center = 0.5 * ((features - centers[y]) ** 2).sum(dim=1).mean()
                loss = ce + params.center_loss_lambda * center
                loss.backward()
                optimiser.step()
                with torch.no_grad():  # Wen et al. Alg. 1: centers follow their class's features
                    f = features.detach()
                    diff = torch.zeros_like(centers).index_add_(0, y, centers[y] - f)
                    counts = torch.bincount(y, minlength=n_classes).to(f.dtype).unsqueeze(1)
                    centers -= params.center_alpha * diff / (1 + counts)
                ce_sum += float(ce.detach()) * len(batch)
                center_sum += float(center.detach()) * len(batch)
            losses = {"cross_entropy": ce_sum / len(xt), "center": center_sum / len(xt)}
            mean_loss = losses["cross_entropy"] + params.center_loss_lambda * losses["center"]
            if (why := _diverged(epoch, mean_loss, net, centers)) is not None:
                raise ClassifierError(why)
            if on_epoch is not None:
                on_epoch(epoch)
        net.eval()
    return net, centers.numpy(), losses


def holdout_metrics(model: Any, vectors: Any, labels: Sequence[str], model_id: str) -> dict[str, float]:
    """Closed-set accuracy on holdout faces of known classes; open-set accuracy over all (others must be UNKNOWN)."""
    x = as_embeddings(vectors)
    y = as_labels(labels, len(x))
    known = np.isin(y, model.classes_)
    proba = model.predict_proba(x, model_id)
    best = model.classes_[proba.argmax(axis=1)]
    named, _ = model.predict(x, model_id)
    open_right = np.where(known, named == y, named == UNKNOWN)
    return {"faces": int(len(y)), "known_faces": int(known.sum()),
            "accuracy": float(np.mean(best[known] == y[known])) if known.any() else float("nan"),
            "open_set_accuracy": float(np.mean(open_right))}


def train_head(vectors: Any, labels: Sequence[str], hidden: int | None = None, center_loss_lambda: float = 0.01,
               epochs: int = 40, seed: int = 0, *, model_id: str, center_alpha: float = 0.5, batch_size: int = 128,
               learning_rate: float = 0.01, weight_decay: float = 1e-4, target_far: float = 0.01,
               min_faces_per_class: int = 2, holdout: tuple[Any, Sequence[str]] | None = None,
               on_epoch: OnEpoch | None = None, groups: Sequence[Any] | None = None) -> HeadModel:
    """Train a head on curated (embedding, class name) pairs; `holdout` (vectors, labels) adds holdout metrics.

    on_epoch(done) is called after each training epoch (progress); a training whose loss or weights
    stop being finite raises ClassifierError instead of returning a head of NaNs.

    Refuses the same bad input as CentroidKnnClassifier.fit (small classes listed, empty, non-finite,
    mixed dimensions). Deterministic for a seed on one machine: rows are put in a canonical order first.
    """
    params = HeadParams(hidden=hidden, center_loss_lambda=float(center_loss_lambda), center_alpha=float(center_alpha),
                        epochs=epochs, batch_size=batch_size, learning_rate=float(learning_rate),
                        weight_decay=float(weight_decay), seed=seed, target_far=float(target_far),
                        min_faces_per_class=min_faces_per_class)
    params.check()
    if not isinstance(model_id, str) or not model_id:
        raise ClassifierError("model_id must name the embedding model of the vectors")
    x, y, classes, index, group = ordered_training_set(vectors, labels, params.min_faces_per_class, groups)
    net, centers, losses = _train_net(x, index, len(classes), params, on_epoch)
    # groups (each face's media) as CentroidKnnClassifier.fit: a whole GIF held out for its genuine distances
    genuine, impostor = leave_one_out_distances(x, index, len(classes), group)
    threshold, far, gar = open_set_threshold(genuine, impostor, params.target_far, stacklevel=3, model_id=model_id)
    head = HeadModel(net=net, classes_=classes, model_id_=model_id, params=params,
                     centroids_=class_centroids(x, index, len(classes)), centers_=centers, threshold_=threshold,
                     false_accept_rate_=far, genuine_accept_rate_=gar, data_digest_=data_digest(x, y),
                     created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), held_out_genuine_=genuine)
    head.metrics = {"train": {**holdout_metrics(head, x, y, model_id), **losses}}
    if holdout is not None:
        head.metrics["holdout"] = holdout_metrics(head, holdout[0], holdout[1], model_id)
    return head


def compare_on_holdout(train: tuple[Any, Sequence[str]], holdout: tuple[Any, Sequence[str]], *, model_id: str,
                       classifier_params: dict[str, Any] | None = None,
                       head_params: dict[str, Any] | None = None,
                       calibration: tuple[Any, Sequence[str] | None] | None = None,
                       on_epoch: OnEpoch | None = None, on_step: OnStep | None = None) -> dict[str, Any]:
    """Centroid classifier vs retrained head, both fitted on `train`, scored on `holdout` (vectors, labels).

    `calibration` (vectors, labels), when given, recalibrates both open-set thresholds (`calibrate`),
    as the deployed models are recalibrated on faces editors marked unknown: each candidate is scored
    as it would be deployed. It must come from the training side: faces calibrated on are refused
    by construction, so scoring them would flatter the open-set accuracy.

    `*_accuracy` is closed-set top-1 over holdout faces whose class exists in train;
    `*_open_set_accuracy` also counts faces of other people, which must come out UNKNOWN.
    on_epoch is the head's training progress (train_head); on_step(text) says the stage under way: "fitting
    the centroid classifier", "training the head on the holdout split, epoch k/N", "scoring both models".
    """
    step = on_step or (lambda text: None)
    step("fitting the centroid classifier on the training split")
    classifier = CentroidKnnClassifier(**(classifier_params or {})).fit(train[0], train[1], model_id)
    epochs = (head_params or {}).get("epochs", HeadParams.epochs)
    head = train_head(train[0], train[1], model_id=model_id, **(head_params or {}),
                      on_epoch=epoch_steps("training the head on the holdout split", epochs, on_epoch, on_step))
    step("scoring both models on the holdout split")
    if calibration is not None:
        classifier.calibrate(calibration[0], calibration[1], model_id, training=True)
        head.calibrate(calibration[0], calibration[1], model_id, training=True)
    c = holdout_metrics(classifier, holdout[0], holdout[1], model_id)
    h = holdout_metrics(head, holdout[0], holdout[1], model_id)
    return {"centroid_accuracy": c["accuracy"], "head_accuracy": h["accuracy"],
            "centroid_open_set_accuracy": c["open_set_accuracy"], "head_open_set_accuracy": h["open_set_accuracy"],
            "holdout_faces": c["faces"], "holdout_known_faces": c["known_faces"], "classes": int(len(head.classes_)),
            "centroid_version": classifier.version, "head_version": head.version}
