"""``ImageModel``: a compact CNN on per-cell crops, to embed cells or to classify them.

The crops come from :func:`scnapse.im.cells_from_labels` (``obsm["crops"]``: cells × channels ×
size × size). ``task="embed"`` trains a convolutional autoencoder on every cell (its code is the
embedding); ``task="classify"`` trains a CNN classifier on the cells that have a label in
``obs[labels_key]`` (the others are ``NaN``), with dataset augmentation. A classifier can start
from an embedding model's convolutions (``pretrained=``): semi-supervised use, the features
learnt from all cells, the classes from the few labelled ones.

A classifier also reads each cell's hand-made features (``obsm["features"]``, from
``cells_from_labels``: regionprops shape and intensity statistics), standardised with the
training cells' mean / std, through a logistic-regression path beside the CNN. With
``linear_init=True`` that path is fitted first (scikit-learn, C=1) and the CNN's head starts at
zero: the model starts as logistic regression on the features and learns what they miss from
the crops; if training ends worse than that start on the validation cells, the start is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from anndata import AnnData

from ..nn.cnn import (
    DEFAULT_CHANNELS,
    CNNClassifierModule,
    ContrastiveModule,
    ConvAutoencoderModule,
    augment_batch,
    nt_xent,
)
from ..nn.losses import check_data_for_cost, reconstruction_loss
from ..train import RunOptions, TrainConfig
from ._base import BaseModel, Prepared, baseline_record, check_count, check_widths
from ._labels import (
    as_categorical,
    check_class_weight,
    encode_labels,
    labels_from_proba,
)

TASKS = ("embed", "classify")
EMBED_METHODS = ("autoencoder", "contrastive")
EMBED_COSTS = ("mse", "bce")
#: temperature of the contrastive cost (SimCLR's NT-Xent)
TEMPERATURE = 0.2
#: the fewest crops one training epoch passes (small sets are repeated, see ``ImageModel.fit``)
EPOCH_CROPS = 256
#: crop settings a model must see again at prediction time
CROP_KEYS = ("size", "n_channels", "normalize", "mask", "projection")


class _DefaultKey(str):
    """The default ``features="features"``: where the cells lack it, the classifier reads the
    crops alone (with a log message); a key the user names must exist."""


#: the default ``obsm`` key of the cells' hand-made features
DEFAULT_FEATURES = _DefaultKey("features")


def default_max_epochs(n_per_epoch: int, batch_size: int, *, steps: int = 300) -> int:
    """About ``steps`` optimisation steps, between 10 and 200 epochs."""
    per_epoch = max(1, -(-n_per_epoch // batch_size))
    return int(np.clip(round(steps / per_epoch), 10, 200))


def _on_disk(a: np.ndarray) -> bool:
    """Is ``a`` a memory map, or a view of one (``cells_from_labels(crops_file=...)``)?"""
    while a is not None:
        if isinstance(a, np.memmap):
            return True
        a = a.base if isinstance(a.base, np.ndarray) else None
    return False


class _CropRows:
    """Rows of a crops array (in memory or a memory map), read batch by batch as a tensor; the
    training Loader takes it like a tensor field (``.device`` and ``[idx]``)."""

    def __init__(self, crops, device):
        self.crops = crops
        self.device = torch.device("cpu")
        self.target = device
        self._tensor = None
        if isinstance(crops, np.ndarray) and not _on_disk(crops):
            self._tensor = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32)).to(device)
            self.device = torch.device(device)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        if self._tensor is not None:
            return self._tensor[idx]
        rows = np.asarray(self.crops[idx.cpu().numpy()], dtype=np.float32)
        return torch.from_numpy(rows)


def get_crops(cells: AnnData, crops_key: str = "crops"):
    """``obsm[crops_key]`` checked to be cells × channels × height × width."""
    if not isinstance(cells, AnnData):
        raise TypeError(
            f"cells must be an AnnData, not {type(cells).__name__}; make one with sn.im.cells_from_labels(image, labels)."
        )
    if cells.n_obs == 0:
        raise ValueError("cells has no rows (no objects).")
    if crops_key not in cells.obsm:
        raise KeyError(
            f"obsm[{crops_key!r}] does not exist (obsm holds {list(cells.obsm.keys())}); make the cells with "
            "sn.im.cells_from_labels(image, labels), or name the crops with crops_key=."
        )
    crops = cells.obsm[crops_key]
    if getattr(crops, "ndim", 0) != 4 or crops.shape[-1] != crops.shape[-2]:
        raise ValueError(
            f"obsm[{crops_key!r}] has shape {getattr(crops, 'shape', None)}; image models need square crops "
            "shaped (cells, channels, size, size), as sn.im.cells_from_labels writes."
        )
    return crops


def _crop_range(crops, chunk: int = 4096) -> tuple[float, float, int]:
    lo, hi, bad = np.inf, -np.inf, 0
    for s in range(0, crops.shape[0], chunk):
        block = np.asarray(crops[s : s + chunk], dtype=np.float32)
        finite = np.isfinite(block)
        bad += int((~finite).sum())
        if finite.any():
            lo, hi = min(lo, float(block[finite].min())), max(hi, float(block[finite].max()))
    return lo, hi, bad


class ImageModel(BaseModel):
    """A CNN on cell crops: a conv autoencoder (``task="embed"``) or a classifier (``"classify"``).

    Parameters
    ----------
    task
        ``"embed"``: an embedding trained on all cells (no labels); ``transform`` gives it.
        ``"classify"``: a CNN classifier trained on the labelled cells; ``predict`` /
        ``predict_proba`` give classes, ``transform`` its pooled features.
    method
        For ``task="embed"``: ``"autoencoder"`` (default; a convolutional autoencoder, its code
        is the embedding; cost ``mse`` or ``bce``) or ``"contrastive"`` (SimCLR-style: the
        embedding of two augmented views of a crop must agree, NT-Xent cost with temperature
        0.2; it captures texture and pattern that an autoencoder's reconstruction misses — see
        the README's benchmark).
    n_latent
        Size of the embedding (``task="embed"``).
    channels
        Feature maps of the convolution blocks; each block halves the crop. Three blocks of
        16/32/64 maps (~24k weights) train in under a minute on one CPU core for 32–48 px crops.
    class_weight
        ``"balanced"``: each class weighs the same in the cost whatever its number of labelled
        cells; ``None``: each cell weighs the same.
    features
        ``task="classify"``: the ``obsm`` key of each cell's hand-made features (``"features"``,
        written by :func:`scnapse.im.cells_from_labels`), read beside the crops through a
        logistic-regression path (standardised with the training cells' mean / std, stored in the
        model). ``None``: the crops alone. With the default, cells without ``obsm["features"]``
        (made by an older version) use the crops alone and the log says so; a key given
        explicitly must exist.
    linear_init
        With features: fit the logistic-regression path first (scikit-learn, C=1, on the
        standardised features of the training cells) and start the CNN's head at zero, so the
        network starts as logistic regression and learns what it misses; if training ends worse
        (validation cross-entropy) than that start, the start is kept
        (``params["kept_linear_start"]``). ``False``: both paths train from the start.
    **train_options
        Any :class:`~scnapse.train.TrainConfig` field. Image defaults that differ from
        ``TrainConfig``'s: ``batch_norm=True``, ``batch_size=64``, ``lr=2e-3``; for the
        classifier also ``augment=("flip", "rot90", "intensity")``, ``validation_fraction=0.2``,
        ``early_stopping=15``; for ``method="contrastive"`` ``augment=("flip", "rot90",
        "intensity", "noise")``. An epoch passes at least 256 crops (a few annotated cells are
        repeated, augmented differently each time); ``max_epochs=None`` gives about 300 steps.
        ``cost``: ``mse`` (default) or ``bce`` for the autoencoder, ``cross_entropy`` for the
        classifier. ``input_noise`` adds Gaussian noise to the
        autoencoder's input (denoising); ``augment`` may also hold ``"noise"``.
    """

    kind = "ImageModel"
    fit_hint = ".fit(cells)"
    #: image training defaults that differ from TrainConfig's (which suit expression data)
    train_defaults = {"batch_norm": True, "batch_size": 64, "lr": 2e-3}
    #: further defaults per task / embedding method
    task_train_defaults = {
        "classify": {"augment": ("flip", "rot90", "intensity"), "validation_fraction": 0.2, "early_stopping": 15},
        "autoencoder": {},
        "contrastive": {"augment": ("flip", "rot90", "intensity", "noise")},
    }

    @classmethod
    def defaults_for(cls, task: str = "classify", method: str = "autoencoder") -> dict:
        """The training defaults of ``task`` (and embedding ``method``): :attr:`train_defaults`
        updated by :attr:`task_train_defaults`."""
        return {**cls.train_defaults, **cls.task_train_defaults["classify" if task == "classify" else method]}

    def __init__(
        self,
        task: str = "classify",
        *,
        method: str = "autoencoder",
        n_latent: int = 16,
        channels: Sequence[int] = DEFAULT_CHANNELS,
        class_weight: str | None = "balanced",
        features: str | None = DEFAULT_FEATURES,
        linear_init: bool = True,
        **train_options,
    ):
        if task not in TASKS:
            raise ValueError(f"task={task!r} is not valid; choose one of {list(TASKS)}.")
        if method not in EMBED_METHODS:
            raise ValueError(f"method={method!r} is not valid; choose one of {list(EMBED_METHODS)}.")
        contrastive = task == "embed" and method == "contrastive"
        self.config = self._config_from(self.task_train_defaults["classify" if task == "classify" else method],
                                        train_options)
        cost = self.config.cost
        if contrastive and cost is not None:
            raise ValueError(
                f"cost={cost!r} does not apply to method='contrastive' (its cost is NT-Xent between two "
                "augmented views); leave cost unset, or use method='autoencoder'."
            )
        if contrastive and not self.config.augment:
            raise ValueError(
                "method='contrastive' learns what stays the same under augmentation: give augment= at least "
                "one of ('flip', 'rot90', 'intensity', 'noise')."
            )
        if task == "embed" and cost is not None and cost not in EMBED_COSTS:
            raise ValueError(f"cost={cost!r} does not fit an image autoencoder; choose one of {list(EMBED_COSTS)}.")
        if task == "classify" and cost not in (None, "cross_entropy"):
            raise ValueError(f"cost={cost!r} does not fit a classifier; use cost='cross_entropy' (the default).")
        n_latent = check_count(n_latent, "n_latent")
        channels = check_widths(channels, "channels", allow_empty=False)
        class_weight = check_class_weight(class_weight)
        if features is not None and (not isinstance(features, str) or not features):
            raise ValueError(f"features={features!r} must be the obsm key of the cells' features "
                             "(e.g. 'features') or None (the crops alone).")
        self.features_key = features
        self.features: str | None = None  # the key the trained model reads (None: crops alone)
        self.feature_names: list[str] = []
        self.linear_init = bool(linear_init)
        self.task = task
        self.method = method if task == "embed" else "None"
        self.n_latent = int(n_latent)
        self.channels = channels
        self.class_weight = class_weight
        self.cost = "cross_entropy" if task == "classify" else ("nt_xent" if contrastive else (cost or "mse"))
        self.module = None
        self.history = None
        self.classes: list[str] = []
        self.crop_params: dict = {}
        self.params: dict = {}

    # -- training -------------------------------------------------------------------------------
    def fit(
        self,
        adata: AnnData,
        *,
        labels_key: str | None = None,
        crops_key: str = "crops",
        pretrained: ImageModel | None = None,
        run: RunOptions | None = None,
        **run_options,
    ) -> ImageModel:
        """Train on the crops of the cells ``adata`` (``obsm[crops_key]``).

        For ``task="classify"``, ``obs[labels_key]`` holds the annotation: a class for the
        labelled cells, ``NaN`` (missing) for the rest. ``pretrained``: an image model whose
        convolution weights start the classifier (same ``channels`` and crop channels).
        ``run`` (or its fields as keywords): see :class:`scnapse.train.RunOptions`.
        """
        if "cells" in run_options:  # the old name of the first argument
            raise TypeError("ImageModel.fit takes the cells as its first argument, adata.")
        return self._fit(adata, run, run_options, labels_key=labels_key, crops_key=crops_key, pretrained=pretrained)

    @property
    def _description(self) -> str:
        return f"image {self.task}"

    def _prepare(self, cells: AnnData, *, device, labels_key=None, crops_key="crops", pretrained=None) -> Prepared:
        crops = get_crops(cells, crops_key)
        n_obs, n_ch, size = crops.shape[0], crops.shape[1], crops.shape[-1]
        lo, hi, bad = _crop_range(crops)
        if bad:
            raise ValueError(f"obsm[{crops_key!r}] holds {bad} NaN or infinite value(s); remake the crops.")
        fields = {"x": _CropRows(crops, device)}
        labels = None
        if self.task == "classify":
            if labels_key is None:
                raise ValueError("A classifier needs labels_key=, the obs column with the annotated classes "
                                 "(the unannotated cells stay NaN).")
            labels = encode_labels(cells.obs, labels_key, warn_missing=False)
            self.classes = labels.classes
            fields["y"] = torch.from_numpy(labels.codes).to(device)
            rows = labels.labelled
            feats = self._cell_features(cells, n_obs)
            if feats is not None:
                fields["f"] = torch.from_numpy(feats).to(device)
        else:
            if self.method != "contrastive":
                check_data_for_cost(self.cost, lo, hi, True, what=f"obsm[{crops_key!r}]")
            rows = np.arange(n_obs)
        if pretrained is not None and (not isinstance(pretrained, ImageModel) or pretrained.module is None):
            raise ValueError("pretrained= must be a trained sn.models.ImageModel (e.g. task='embed').")
        self.crop_params = {k: v for k, v in dict(cells.uns.get("crops", {})).items() if k in CROP_KEYS}
        self.crop_params.update({"size": int(size), "n_channels": int(n_ch)})
        params = {
            "task": self.task, "method": self.method, "n_latent": self.n_latent if self.task == "embed" else "None",
            "channels": list(self.channels), "class_weight": str(self.class_weight),
            "classes": list(self.classes), "labels_key": str(labels_key), "crops_key": crops_key,
            "crop": dict(self.crop_params), "pretrained": pretrained is not None, "cost": self.cost,
            "n_obs": n_obs, "n_labelled": len(rows),
        }
        if self.task == "classify":
            params.update(features=str(self.features), n_features=len(self.feature_names),
                          feature_names=list(self.feature_names), linear_init=self.linear_init)
        return Prepared(fields, rows, n_ch, labels=labels, params=params, val_batch=256,
                        extra={"size": size, "pretrained": pretrained})

    def _cell_features(self, cells: AnnData, n_obs: int) -> np.ndarray | None:
        """The cells' feature matrix (float32) for a classifier, or ``None`` (crops alone); sets
        :attr:`features` and :attr:`feature_names`."""
        from .._settings import logger

        key = self.features_key
        self.features, self.feature_names = None, []
        if key is None:
            return None
        if key not in cells.obsm:
            if isinstance(key, _DefaultKey):
                logger.info(f"The cells have no obsm[{key!r}] (hand-made features, written by "
                            "sn.im.cells_from_labels); the image classifier reads the crops alone. Remake the "
                            "cells with sn.im.cells_from_labels to add them, or pass features=None.")
                return None
            raise KeyError(f"features={key!r}: obsm[{key!r}] does not exist (obsm holds {list(cells.obsm.keys())}). "
                           "Make the cells with sn.im.cells_from_labels (it writes obsm['features']), name "
                           "another obsm key, or pass features=None for the crops alone.")
        feats = _feature_matrix(cells, key, n_obs)
        self.features = str(key)
        self.feature_names = _feature_names(cells, key, feats.shape[1])
        return feats

    def _build(self, data: Prepared, train_rows, seed: int):
        cfg, n_ch = self.config, data.n_in
        common = {"activation": cfg.activation, "dropout": cfg.dropout, "batch_norm": cfg.batch_norm}
        if self.task == "classify":
            module = CNNClassifierModule(n_ch, len(self.classes), self.channels, n_features=len(self.feature_names),
                                         **common)
            if self.features is not None:
                F_train = data.fields["f"][torch.as_tensor(train_rows)].cpu().numpy().astype(np.float64)
                mean, std = F_train.mean(axis=0), F_train.std(axis=0)
                std[std < 1e-8] = 1.0
                module.set_standardisation(mean, std)
                data.extra["feature_stats"] = (mean, std)
                if self.linear_init:
                    data.extra["logistic"] = self._fit_logistic(data, train_rows)
                    module.set_linear(*data.extra["logistic"])
        elif self.method == "contrastive":
            module = ContrastiveModule(n_ch, self.n_latent, self.channels, **common)
        else:
            module = ConvAutoencoderModule(n_ch, data.extra["size"], self.n_latent, self.channels, **common)
        if data.extra["pretrained"] is not None:
            self._load_pretrained(module, data.extra["pretrained"], n_ch)
        data.params["n_parameters"] = sum(p.numel() for p in module.parameters())
        return module

    def _loaders(self, data, train_rows, val_rows, gen, device, run):
        # an epoch is at least EPOCH_CROPS crops: a few annotated cells are passed several times per
        # epoch (augmented differently each time), so epochs, early stopping and batch-norm
        # statistics mean the same whether 10 or 10,000 cells are annotated
        repeats = max(1, -(-EPOCH_CROPS // len(train_rows)))
        data.params["passes_per_epoch"] = repeats
        return super()._loaders(data, np.tile(train_rows, repeats), val_rows, gen, device, run)

    def _default_max_epochs(self, n_samples: int, data: Prepared) -> int:
        return default_max_epochs(n_samples, self.config.batch_size)

    def _load_pretrained(self, module, pretrained, n_ch):
        src = pretrained.module.encoder
        if src.channels != module.encoder.channels or src.in_channels != n_ch:
            raise ValueError(
                f"pretrained model has channels={src.channels} on {src.in_channels} image channel(s); this model "
                f"has channels={module.encoder.channels} on {n_ch}. Use the same channels=."
            )
        module.encoder.load_state_dict({k: v.detach().cpu() for k, v in src.state_dict().items()})

    def _step(self, data: Prepared):
        cfg, task, cost, method = self.config, self.task, self.cost, self.method
        augment, noise = tuple(cfg.augment), cfg.input_noise
        weights = data.class_weight

        def step(module, batch: dict, training: bool) -> torch.Tensor:
            x = batch["x"]
            if method == "contrastive":  # two views of each crop, in validation too
                return nt_xent(module(augment_batch(x, augment))["projection"],
                               module(augment_batch(x, augment))["projection"], TEMPERATURE)
            if training:
                x = augment_batch(x, augment)
            if task == "classify":
                logits = module(x, batch.get("f"))
                y = batch["y"]
                losses = F.cross_entropy(logits, y, reduction="none")
                return losses if weights is None else losses * weights[y]
            inp = x + noise * torch.randn_like(x) if (training and noise > 0) else x
            out = module(inp)["out"]
            return reconstruction_loss(cost, out.flatten(1), x.flatten(1))

        return step

    # -- the logistic-regression path, the keep-the-start check and the baseline ----------------
    def _fit_logistic(self, data: Prepared, train_rows):
        """Logistic regression (sklearn, C=1) on the standardised features of the training cells,
        as (weight (classes, features), bias (classes,))."""
        from sklearn.linear_model import LogisticRegression

        mean, std = data.extra["feature_stats"]
        X = (data.fields["f"].cpu().numpy()[train_rows].astype(np.float64) - mean) / std
        y = data.labels.codes[train_rows]
        k = len(self.classes)
        W, b = np.zeros((k, X.shape[1])), np.zeros(k)
        present = np.unique(y)
        if len(present) > 1:
            lr = LogisticRegression(C=1.0, max_iter=2000,
                                    class_weight="balanced" if self.class_weight == "balanced" else None)
            lr.fit(X, y)
            if len(present) == 2:  # one logit z: softmax([0, z]) = sigmoid(z)
                W[present[1]], b[present[1]] = lr.coef_[0], lr.intercept_[0]
            else:
                W[present], b[present] = lr.coef_, lr.intercept_
        return W, b

    def _scores(self, data: Prepared, rows, module) -> tuple[np.ndarray, float]:
        """(predicted codes, mean cross-entropy) of ``module`` on the cells ``rows``."""
        module.eval()
        codes, losses = [], []
        y_all = data.fields["y"]
        with torch.no_grad():
            for s in range(0, len(rows), 256):
                idx = torch.as_tensor(rows[s : s + 256], dtype=torch.long)
                x = data.fields["x"][idx].to(y_all.device)
                f = data.fields["f"][idx.to(y_all.device)] if "f" in data.fields else None
                logits = module(x, f)
                y = y_all[idx.to(y_all.device)]
                losses.append(F.cross_entropy(logits, y, reduction="sum").item())
                codes.append(logits.argmax(1).cpu().numpy())
        return np.concatenate(codes), float(sum(losses) / max(len(rows), 1))

    def _after_fit(self, data: Prepared, train_rows, val_rows, val, gen) -> None:
        if self.task != "classify" or self.features is None or not self.linear_init:
            return
        kept = False
        if len(val_rows):
            _, ce = self._scores(data, val_rows, self.module)
            W, b = (torch.as_tensor(a, dtype=torch.float32) for a in data.extra["logistic"])
            trained = {k: v.clone() for k, v in self.module.state_dict().items()}
            self.module.set_linear(W, b)
            _, ce_start = self._scores(data, val_rows, self.module)
            if ce > ce_start:  # training did not beat its start on the held-out cells: keep the start
                kept = True
            else:
                self.module.load_state_dict(trained)
        data.params["kept_linear_start"] = kept

    def _baseline(self, data: Prepared, train_rows, val_rows):
        if self.task != "classify" or "f" not in data.fields or not len(val_rows):
            return None
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.metrics import accuracy_score, f1_score

        X, codes = data.fields["f"].cpu().numpy(), data.labels.codes
        rf = RandomForestClassifier(n_estimators=200, random_state=int(self.config.resolved_seed), n_jobs=1)
        rf.fit(X[train_rows], codes[train_rows])
        pred, _ = self._scores(data, val_rows, self.module)
        rf_pred, y = rf.predict(X[val_rows]), codes[val_rows]
        return baseline_record(method="random forest on regionprops features", metric="macro-F1",
                               network=f1_score(y, pred, average="macro"),
                               baseline=f1_score(y, rf_pred, average="macro"), n=len(val_rows),
                               network_accuracy=float(accuracy_score(y, pred)),
                               baseline_accuracy=float(accuracy_score(y, rf_pred)))

    # -- inference ------------------------------------------------------------------------------
    def _check_cells(self, cells: AnnData, crops_key: str):
        crops = get_crops(cells, crops_key)
        size, n_ch = self.crop_params["size"], self.crop_params["n_channels"]
        if crops.shape[1] != n_ch or crops.shape[-1] != size:
            raise ValueError(
                f"The model was trained on {n_ch}-channel crops of {size} px; these crops are "
                f"{crops.shape[1]}-channel, {crops.shape[-1]} px. Remake them with "
                f"sn.im.cells_from_labels(image, labels, size={size}) and the same channels."
            )
        made = dict(cells.uns.get("crops", {}))
        for k in ("normalize", "mask"):
            if k in self.crop_params and k in made and str(made[k]) != str(self.crop_params[k]):
                raise ValueError(
                    f"The model was trained on crops made with {k}={self.crop_params[k]!r}; these were made "
                    f"with {k}={made[k]!r}. Remake them with sn.im.cells_from_labels(..., {k}={self.crop_params[k]!r})."
                )
        return crops

    def _batches(self, crops, batch_size: int):
        device = next(self.module.parameters()).device
        for s in range(0, crops.shape[0], batch_size):
            x = torch.from_numpy(np.ascontiguousarray(crops[s : s + batch_size], dtype=np.float32)).to(device)
            if not torch.isfinite(x).all():
                raise ValueError("The crops hold NaN or infinite values; remake them.")
            yield s, x

    def _new_features(self, cells: AnnData, n_obs: int) -> torch.Tensor | None:
        """The features this classifier reads, of new cells (checked against the training ones)."""
        if self.features is None:
            return None
        if self.features not in cells.obsm:
            raise KeyError(f"This classifier reads each cell's features from obsm[{self.features!r}], which these "
                           "cells lack; make them with sn.im.cells_from_labels (it writes obsm['features']).")
        feats = _feature_matrix(cells, self.features, n_obs)
        names = _feature_names(cells, self.features, feats.shape[1])
        if feats.shape[1] != len(self.feature_names) or names != self.feature_names:
            raise ValueError(f"obsm[{self.features!r}] holds the features {names}; the model was trained on "
                             f"{self.feature_names}. Make the cells the same way (same channels).")
        return torch.from_numpy(feats)

    def transform(self, cells: AnnData, *, crops_key: str = "crops", batch_size: int = 512) -> np.ndarray:
        """The embedding of every cell: the autoencoder's code, or the classifier's pooled
        convolution features."""
        self._require_fitted()
        crops = self._check_cells(cells, crops_key)
        dim = self.n_latent if self.task == "embed" else self.module.encoder.n_out
        out = np.empty((crops.shape[0], dim), dtype=np.float32)
        self.module.eval()
        with torch.inference_mode():
            for s, x in self._batches(crops, batch_size):
                z = self.module.encode(x) if self.task == "embed" else self.module.embed(x)
                out[s : s + x.shape[0]] = z.cpu().numpy()
        return out

    def predict_proba(self, cells: AnnData, *, crops_key: str = "crops", batch_size: int = 512) -> np.ndarray:
        """Class probabilities, cells × classes (columns in ``self.classes`` order)."""
        self._require_fitted()
        if self.task != "classify":
            raise ValueError("This ImageModel embeds (task='embed'); only a classifier predicts classes.")
        crops = self._check_cells(cells, crops_key)
        feats = self._new_features(cells, crops.shape[0])
        out = np.empty((crops.shape[0], len(self.classes)), dtype=np.float32)
        self.module.eval()
        with torch.inference_mode():
            for s, x in self._batches(crops, batch_size):
                f = None if feats is None else feats[s : s + x.shape[0]].to(x.device)
                out[s : s + x.shape[0]] = torch.softmax(self.module(x, f), dim=1).cpu().numpy()
        return out

    def predict(self, adata: AnnData, *, crops_key: str = "crops", min_confidence: float = 0.0) -> pd.Categorical:
        """The most probable class of every cell (a ``pandas.Categorical`` over :attr:`classes`);
        ``"Unassigned"`` where its probability is below ``min_confidence``."""
        proba = self.predict_proba(adata, crops_key=crops_key)
        return as_categorical(labels_from_proba(proba, self.classes, min_confidence)[0], self.classes)

    # -- save / load ----------------------------------------------------------------------------
    def _get_state(self):
        self._require_fitted()
        config = {
            "architecture": {"task": self.task, "method": self.method, "n_latent": self.n_latent, "channels": self.channels,
                             "activation": self.config.activation, "dropout": self.config.dropout,
                             "batch_norm": self.config.batch_norm, "cost": self.cost,
                             "n_classes": len(self.classes), "n_features": len(self.feature_names),
                             "linear_init": self.linear_init},
            "features": self.features, "feature_names": list(self.feature_names),
            "baseline": self.baseline,
            "crop": self.crop_params,
            "classes": list(self.classes),
            "class_weight": self.class_weight,
            "train_config": self.config.to_dict(),
            "params": {k: v for k, v in self.params.items() if k != "environment"},
            "history": self.history.to_dict() if self.history else None,
        }
        tensors = {f"module.{k}": v for k, v in self.module.state_dict().items()}
        return config, tensors

    def _set_state(self, config, tensors):
        from ..train.loop import History

        arch = config["architecture"]
        self.task, self.n_latent, self.channels = arch["task"], int(arch["n_latent"]), list(arch["channels"])
        self.method = arch.get("method", "autoencoder" if self.task == "embed" else "None")
        self.cost = arch["cost"]
        tc = dict(config["train_config"])
        tc["augment"] = tuple(tc.get("augment") or ())
        self.config = TrainConfig(**tc)
        self.class_weight = config.get("class_weight")
        self.classes = list(config["classes"])
        # models saved before the features had none
        self.features = config.get("features")
        self.features_key = self.features
        self.feature_names = list(config.get("feature_names") or [])
        self.linear_init = bool(arch.get("linear_init", False))
        self.baseline = config.get("baseline")
        self.crop_params = dict(config["crop"])
        self.params = config.get("params", {})
        h = config.get("history")
        self.history = History(**h) if h else None
        n_ch, size = int(self.crop_params["n_channels"]), int(self.crop_params["size"])
        if self.task == "classify":
            self.module = CNNClassifierModule(n_ch, len(self.classes), self.channels, activation=arch["activation"],
                                              dropout=arch["dropout"], batch_norm=arch["batch_norm"],
                                              n_features=int(arch.get("n_features", 0)))
        elif self.method == "contrastive":
            self.module = ContrastiveModule(n_ch, self.n_latent, self.channels, activation=arch["activation"],
                                            dropout=arch["dropout"], batch_norm=arch["batch_norm"])
        else:
            self.module = ConvAutoencoderModule(n_ch, size, self.n_latent, self.channels,
                                                activation=arch["activation"], dropout=arch["dropout"],
                                                batch_norm=arch["batch_norm"])
        state = {k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")}
        self.module.load_state_dict(state)
        self.module.eval()


def _feature_matrix(cells: AnnData, key: str, n_obs: int) -> np.ndarray:
    """``obsm[key]`` as a finite float32 matrix, cells × features."""
    feats = cells.obsm[key]
    feats = feats.to_numpy() if isinstance(feats, pd.DataFrame) else np.asarray(feats)
    if feats.ndim != 2 or feats.shape[0] != n_obs or not np.issubdtype(feats.dtype, np.number):
        raise ValueError(f"obsm[{key!r}] has shape {feats.shape} ({feats.dtype}); the cells' features must be a "
                         "numeric matrix, cells × features, as sn.im.cells_from_labels writes.")
    feats = feats.astype(np.float32)
    bad = int((~np.isfinite(feats)).sum())
    if bad:
        raise ValueError(f"obsm[{key!r}] holds {bad} NaN or infinite value(s); fill them first, or pass features=None.")
    return feats


def _feature_names(cells: AnnData, key: str, n: int) -> list[str]:
    """The feature names: ``uns["crops"]["feature_names"]`` for ``obsm["features"]``, a
    DataFrame's columns, else ``<key>_0``…"""
    feats = cells.obsm[key]
    if isinstance(feats, pd.DataFrame):
        return [str(c) for c in feats.columns]
    names = dict(cells.uns.get("crops", {})).get("feature_names") if key == "features" else None
    if names is not None and len(names) == n:
        return [str(c) for c in names]
    return [f"{key}_{i}" for i in range(n)]


#: older names of the image training defaults
IMAGE_DEFAULTS = ImageModel.train_defaults
CONTRASTIVE_DEFAULTS = ImageModel.defaults_for("embed", "contrastive")
CLASSIFIER_DEFAULTS = ImageModel.defaults_for("classify")
