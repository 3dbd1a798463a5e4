"""The training engine: every cost, activation and optimizer learns; early stopping, cancel,
reproducibility, and batches from dense / sparse matrices."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from scipy import sparse

from scnapse.nn import AutoencoderModule
from scnapse.nn.activations import ACTIVATIONS
from scnapse.nn.losses import COSTS, check_data_for_cost, reconstruction_loss
from scnapse.train import Loader, Matrix, TrainConfig, fit, seed_everything, split_indices
from scnapse.train.config import OPTIMIZERS, OptionError, literal_choices
from scnapse.train.loop import _mean_loss


def _data(n=96, g=12, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    w = rng.normal(size=(2, g))
    rate = np.exp(0.8 * z @ w) * 3
    counts = rng.poisson(rate).astype(np.float32)
    return counts


def _train(cost="mse", activation="relu", optimizer="adam", lr=1e-2, epochs=15, X=None, **extra):
    counts = _data() if X is None else X
    if cost == "bce":
        x = (counts > 0).astype(np.float32)
    elif cost in ("poisson", "nb", "kl", "hellinger"):
        x = counts
    else:
        x = np.log1p(counts)
    gen = seed_everything(0)
    options = {"early_stopping": 0, "validation_fraction": 0.2, "batch_size": 16, "dropout": 0.0, **extra}
    cfg = TrainConfig(cost=cost, activation=activation, optimizer=optimizer, lr=lr, max_epochs=epochs, **options)
    module = AutoencoderModule(x.shape[1], 2, (16,), activation=activation, cost=cost)
    lib = torch.from_numpy(x.sum(1).astype(np.float32))
    fields = {"x": Matrix(x), "library": lib}
    tr, va = split_indices(len(x), 0.2, gen)

    def step(m, batch, training):
        out = m(torch.log1p(batch["x"]) if cost in ("poisson", "nb") else batch["x"])
        return reconstruction_loss(cost, out["out"], batch["x"], library=batch["library"],
                                   log_theta=getattr(m, "log_theta", None))

    hist = fit(module, step, Loader(fields, tr, 16, shuffle=True, generator=gen), Loader(fields, va, 64), cfg,
               max_epochs=epochs, progress=False)
    return hist, module, step, Loader(fields, va, 64)


@pytest.mark.parametrize("cost", COSTS)
def test_each_cost_learns(cost):
    hist, *_ = _train(cost=cost)
    assert hist.train_loss[-1] < 0.9 * hist.train_loss[0], hist.train_loss
    assert all(np.isfinite(hist.train_loss))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_activation_learns(activation):
    hist, *_ = _train(activation=activation)
    assert hist.train_loss[-1] < hist.train_loss[0]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_optimizer_learns(optimizer):
    lr = {"sgd": 0.1, "momentum": 0.02, "nesterov": 0.02, "adagrad": 0.05}.get(optimizer, 1e-2)
    hist, *_ = _train(optimizer=optimizer, lr=lr)
    assert hist.train_loss[-1] < 0.95 * hist.train_loss[0], hist.train_loss


def test_l1_l2_shrink_weights():
    _, plain, *_ = _train(epochs=10)
    _, l1, *_ = _train(epochs=10, l1=1e-2)
    _, l2, *_ = _train(epochs=10, l2=1e-2)
    norm = lambda m: sum(p.abs().sum().item() for n, p in m.named_parameters() if p.dim() > 1)  # noqa: E731
    assert norm(l1) < norm(plain)
    assert norm(l2) < norm(plain)


def test_early_stopping_stops_and_restores_best():
    # a high learning rate on a tiny set: validation loss turns up quickly
    hist, module, step, val = _train(lr=0.05, epochs=200, early_stopping=5, X=_data(n=40))
    assert hist.stopped == "early_stopping"
    assert len(hist.epoch) < 200
    assert len(hist.epoch) - hist.best_epoch == 5
    best_val = min(v for v in hist.val_loss if v is not None)
    assert _mean_loss(module, step, val) == pytest.approx(best_val, rel=1e-5)


def _shifted_regression(val_target: float):
    """A linear model started at zero, trained towards 1 but validated against ``val_target``."""
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 1)
    with torch.no_grad():
        module.weight.zero_()
        module.bias.zero_()
    x = torch.randn(64, 3)
    fields = {"x": x, "y": torch.ones(64)}
    val_fields = {"x": x[:16], "y": torch.full((16,), float(val_target))}

    def step(m, batch, training):
        return (m(batch["x"])[:, 0] - batch["y"]) ** 2

    cfg = TrainConfig(cost="mse", lr=0.05, early_stopping=3, max_epochs=20)
    train = Loader(fields, np.arange(64), 16, shuffle=True, generator=torch.Generator().manual_seed(0))
    return module, step, train, Loader(val_fields, np.arange(16), 16), cfg


def test_a_start_no_epoch_beats_is_kept_as_epoch_0():
    # every epoch moves the model towards the training target 1, away from the validation target 0
    module, step, train, val, cfg = _shifted_regression(0.0)
    hist = fit(module, step, train, val, cfg, max_epochs=20, progress=False)
    assert hist.start_val_loss == pytest.approx(0.0) and min(hist.val_loss) > 1e-3
    assert hist.best_epoch == 0 and hist.stopped == "early_stopping" and hist.epoch == [1, 2, 3]
    assert module.weight.abs().max().item() == 0.0 and module.bias.abs().max().item() == 0.0  # the start weights
    assert hist.to_dict()["start_val_loss"] == pytest.approx(0.0)
    # validated against the training target, the epochs beat the start and the best one is kept
    module, step, train, val, cfg = _shifted_regression(1.0)
    hist = fit(module, step, train, val, cfg, max_epochs=20, progress=False)
    assert hist.start_val_loss == pytest.approx(1.0) and hist.best_epoch >= 1
    assert _mean_loss(module, step, val) == pytest.approx(min(hist.val_loss), rel=1e-5)


def test_measuring_the_start_draws_no_random_numbers():
    # a step that samples even when evaluating (as a variational model may): the start's
    # evaluation must leave the generator as it was, so a seed gives the same training
    module, _, train, val, cfg = _shifted_regression(1.0)
    seen = []

    def step(m, batch, training):
        if training and not seen:
            seen.append(torch.random.get_rng_state())
        noise = torch.rand(batch["x"].shape[0])
        return (m(batch["x"])[:, 0] - batch["y"]) ** 2 + 0.0 * noise

    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    hist = fit(module, step, train, val, cfg, max_epochs=1, progress=False)
    assert hist.start_val_loss is not None and torch.equal(seen[0], before)


def test_cancel_keeps_best_so_far():
    cancel = threading.Event()
    seen = []

    def on_epoch(report):
        seen.append(report.epoch)
        if report.epoch == 3:
            cancel.set()

    counts = np.log1p(_data())
    cfg = TrainConfig(cost="mse", max_epochs=50, early_stopping=0, lr=1e-2)
    module = AutoencoderModule(counts.shape[1], 2, (8,))
    fields = {"x": Matrix(counts)}
    step = lambda m, b, t: reconstruction_loss("mse", m(b["x"])["out"], b["x"])  # noqa: E731
    hist = fit(module, step, Loader(fields, np.arange(80), 16), Loader(fields, np.arange(80, 96), 16), cfg,
               max_epochs=50, progress=False, callback=on_epoch, cancel=cancel)
    assert hist.stopped == "cancelled"
    assert seen == [1, 2, 3]
    assert _mean_loss(module, step, Loader(fields, np.arange(80, 96), 16)) == pytest.approx(
        min(hist.val_loss), rel=1e-5)


def test_callback_false_stops():
    counts = np.log1p(_data())
    cfg = TrainConfig(cost="mse", max_epochs=30, early_stopping=0)
    module = AutoencoderModule(counts.shape[1], 2, (8,))
    fields = {"x": Matrix(counts)}
    step = lambda m, b, t: reconstruction_loss("mse", m(b["x"])["out"], b["x"])  # noqa: E731
    hist = fit(module, step, Loader(fields, np.arange(96), 32), None, cfg, max_epochs=30, progress=False,
               callback=lambda r: r.epoch < 4)
    assert hist.epoch == [1, 2, 3, 4]
    assert hist.stopped == "callback"


def test_same_seed_same_numbers():
    h1, m1, *_ = _train(epochs=5)
    h2, m2, *_ = _train(epochs=5)
    assert h1.train_loss == h2.train_loss
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_sparse_batches_equal_dense(fmt):
    rng = np.random.default_rng(1)
    dense = (rng.random((50, 30)) < 0.2) * rng.integers(1, 9, (50, 30))
    m_sparse = Matrix(sparse.csr_matrix(dense).asformat(fmt))
    m_dense = Matrix(dense)
    assert m_sparse.kind == "sparse"
    idx = torch.tensor([7, 0, 49, 3, 3, 12])
    assert torch.equal(m_sparse.take(idx), m_dense.take(idx))
    assert torch.equal(m_dense.take(idx), torch.from_numpy(dense[idx.numpy()].astype(np.float32)))


def test_sparse_with_duplicate_entries_is_summed_not_modified():
    X = sparse.csr_matrix((np.array([1.0, 2.0]), np.array([1, 1]), np.array([0, 2, 2])), shape=(2, 3))
    before = X.data.copy()
    out = Matrix(X).take(torch.tensor([0, 1]))
    assert out[0, 1] == 3.0 and out.sum() == 3.0
    assert np.array_equal(X.data, before) and X.nnz == 2


def test_loader_covers_every_row_once_per_epoch():
    fields = {"i": torch.arange(37)}
    loader = Loader(fields, np.arange(37), 8, shuffle=True, generator=torch.Generator().manual_seed(0))
    seen = torch.cat([b["i"] for b in loader])
    assert sorted(seen.tolist()) == list(range(37))


def test_stratified_split_keeps_every_class():
    labels = np.array(["a"] * 20 + ["b"] * 5 + ["c"] * 2)
    tr, va = split_indices(len(labels), 0.2, torch.Generator().manual_seed(0), stratify=labels)
    assert set(labels[va]) == {"a", "b", "c"} and set(labels[tr]) == {"a", "b", "c"}
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)


def test_split_that_leaves_no_cells_is_refused():
    with pytest.raises(ValueError, match="validation_fraction"):
        split_indices(3, 0.1, torch.Generator())


def test_config_rejects_unknown_and_invalid_options():
    with pytest.raises(ValueError, match="Valid training options"):
        TrainConfig.from_kwargs(learning_rate=0.1)
    with pytest.raises(OptionError, match="optimizer='adamax' is not valid"):
        TrainConfig(optimizer="adamax")
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="dropout"):
        TrainConfig(dropout=1.5)
    with pytest.raises(ValueError, match="augment"):
        TrainConfig(augment=("zoom",))
    assert literal_choices("optimizer") == OPTIMIZERS
    assert "hellinger" in literal_choices("cost")


@pytest.mark.parametrize(
    "cost, vmin, vmax, integer, match",
    [("bce", 0, 5.2, False, "bce"), ("nb", 0, 4.1, False, "non-integer"), ("poisson", -1, 3, True, "negative"),
     ("kl", -0.5, 2, False, "negative"), ("hellinger", -0.5, 2, False, "negative")],
)
def test_costs_refuse_data_they_cannot_use(cost, vmin, vmax, integer, match):
    with pytest.raises(ValueError, match=match):
        check_data_for_cost(cost, vmin, vmax, integer)


def test_kl_and_hellinger_are_zero_for_a_perfect_profile():
    x = torch.tensor([[1.0, 3.0, 0.0, 4.0]])
    logits = torch.log(torch.tensor([[1.0, 3.0, 1e-12, 4.0]]))
    assert reconstruction_loss("kl", logits, x).item() == pytest.approx(0, abs=1e-5)
    assert reconstruction_loss("hellinger", logits, x).item() == pytest.approx(0, abs=1e-3)
    uniform = torch.zeros(1, 4)
    assert reconstruction_loss("kl", uniform, x).item() > 0.1
    assert 0 < reconstruction_loss("hellinger", uniform, x).item() <= 1


def test_divergence_gives_a_clear_error():
    with pytest.raises(FloatingPointError, match="Lower the learning rate"):
        _train(optimizer="sgd", lr=1e6, epochs=5)


@pytest.mark.parametrize("cost", ["nb", "poisson"])
def test_count_likelihoods_at_nonzeros_equal_the_dense_formula(cost):
    """The CPU form (x-terms at the non-zeros only) and the GPU form (every entry) are one formula,
    and both equal the textbook negative log-likelihood, values and gradients."""
    import torch.nn.functional as F

    from scnapse.nn.losses import reconstruction_loss

    gen = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.rand(32, 40, generator=gen) * 3, generator=gen) * (torch.rand(32, 40, generator=gen) > 0.5)
    lib = x.sum(1)
    out = torch.randn(32, 40, generator=gen, requires_grad=True)
    log_theta = torch.randn(40, generator=gen, requires_grad=True)
    log_mu = F.log_softmax(out, dim=1) + lib.clamp_min(1).log().unsqueeze(1)
    if cost == "nb":
        th = log_theta.exp()
        ll = (torch.lgamma(x + th) - torch.lgamma(th) - torch.lgamma(x + 1)
              + th * (log_theta - torch.logaddexp(log_theta, log_mu)) + x * (log_mu - torch.logaddexp(log_theta, log_mu)))
    else:
        ll = x * log_mu - log_mu.exp() - torch.lgamma(x + 1)
    textbook = -ll.mean(1)
    grads = [torch.autograd.grad(textbook.sum(), [out, log_theta], allow_unused=True)]
    for at_nonzeros in (True, False):
        got = reconstruction_loss(cost, out, x, library=lib, log_theta=log_theta, at_nonzeros=at_nonzeros)
        torch.testing.assert_close(got, textbook, rtol=1e-5, atol=1e-5)
        grads.append(torch.autograd.grad(got.sum(), [out, log_theta], allow_unused=True))
    for g in grads[1:]:
        for a, b in zip(g, grads[0]):
            if b is not None:
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
