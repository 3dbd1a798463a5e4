"""Cost functions by name, with what each needs of its input.

Every reconstruction cost takes the decoder's raw output ``out`` (shape cells × genes) and the
target ``x`` and returns one number per cell; the training loop averages over cells. Formulas
(``p`` the cell's profile ``x / Σx``, ``q = softmax(out)``, ``ℓ = Σx`` the cell's library size):

=============  ================================================  ==============================
name           per-cell cost                                     input it needs
=============  ================================================  ==============================
``mse``        mean over genes of ``(out − x)²``                 any finite real values
``bce``        mean over genes of ``−x log σ(out) − (1−x) log(1−σ(out))``  values in [0, 1]
``kl``         ``KL(p‖q) = Σ p (log p − log q)``                 non-negative, Σx > 0
``hellinger``  ``H(p, q) = sqrt(½ Σ (√p − √q)²)``                non-negative, Σx > 0
``poisson``    mean over genes of ``μ − x log μ + log x!``, ``μ = ℓ q``   non-negative counts
``nb``         mean over genes of the negative-binomial NLL with mean ``μ = ℓ q`` and a
               per-gene inverse dispersion ``θ``                 non-negative counts
=============  ================================================  ==============================

``cross_entropy`` (softmax cross-entropy over classes) is the classifiers' cost.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F

Cost = Literal["mse", "bce", "kl", "hellinger", "poisson", "nb"]
COSTS: tuple[str, ...] = get_args(Cost)

#: what each cost needs of the data, in words for error messages
REQUIREMENTS = {
    "mse": "finite real values",
    "bce": "values in [0, 1] (e.g. binarised or min-max scaled data)",
    "kl": "non-negative values with a positive sum in every cell (a profile)",
    "hellinger": "non-negative values with a positive sum in every cell (a profile)",
    "poisson": "raw non-negative integer counts (not log-normalised data)",
    "nb": "raw non-negative integer counts (not log-normalised data)",
}
COUNT_COSTS = ("poisson", "nb")
#: costs whose decoder output is a distribution over genes (softmax)
PROFILE_COSTS = ("kl", "hellinger", "poisson", "nb")
_EPS = 1e-8


def check_cost(name: str) -> str:
    if name not in COSTS:
        raise ValueError(f"Unknown cost {name!r}; choose one of {list(COSTS)}.")
    return name


def check_data_for_cost(
    cost: str, vmin: float, vmax: float, all_integer: bool, *, what: str = "the data"
) -> None:
    """Refuse data a cost cannot use, given the matrix's range and whether it holds integers only.

    Raises a ``ValueError`` that names the problem and the fix.
    """
    check_cost(cost)
    if cost == "bce" and (vmin < 0 or vmax > 1):
        raise ValueError(
            f"cost='bce' needs {REQUIREMENTS['bce']}, but {what} ranges from {vmin:g} to {vmax:g}. "
            "Use cost='mse' for log-normalised data, or scale the data into [0, 1] first."
        )
    if cost in PROFILE_COSTS and vmin < 0:
        raise ValueError(
            f"cost={cost!r} needs {REQUIREMENTS[cost]}, but {what} has negative values "
            f"(min {vmin:g}), as scaled data has. Use cost='mse', or give unscaled data "
            "(layer=... with counts or log-normalised values)."
        )
    if cost in COUNT_COSTS:
        if not all_integer:
            raise ValueError(
                f"cost={cost!r} needs {REQUIREMENTS[cost]}, but {what} holds non-integer values "
                "(it looks normalised or log-transformed). Give the raw counts with layer='counts' "
                "(keep a copy before sc.pp.normalize_total), or use cost='mse'."
            )


def mse(out: torch.Tensor, x: torch.Tensor, **_) -> torch.Tensor:
    return (out - x).pow(2).mean(dim=1)


def bce(out: torch.Tensor, x: torch.Tensor, **_) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(out, x, reduction="none").mean(dim=1)


def _profile(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(dim=1, keepdim=True).clamp_min(_EPS)


def kl(out: torch.Tensor, x: torch.Tensor, **_) -> torch.Tensor:
    p = _profile(x)
    log_q = F.log_softmax(out, dim=1)
    # 0 · log 0 = 0: xlogy handles it
    return (torch.special.xlogy(p, p) - p * log_q).sum(dim=1)


def hellinger(out: torch.Tensor, x: torch.Tensor, **_) -> torch.Tensor:
    p = _profile(x)
    q = F.softmax(out, dim=1)
    h2 = 0.5 * (p.sqrt() - q.sqrt()).pow(2).sum(dim=1)
    return (h2 + _EPS).sqrt()


def _at_nonzeros(x: torch.Tensor, at_nonzeros: bool | None) -> bool:
    """Evaluate a count likelihood's x-terms at the non-zeros only? ``None``: on the CPU (on a GPU,
    finding the non-zeros would wait for the device; the dense form is fast there)."""
    return not (x.is_cuda or x.is_mps) if at_nonzeros is None else at_nonzeros


def _nonzeros(x: torch.Tensor, nonzeros) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, cols)`` of ``x``'s non-zeros: ``nonzeros`` when given (the data loader has them from
    the sparse matrix, sparing a search of the dense block; explicit zeros among them add nothing),
    else found in ``x``."""
    if nonzeros is not None:
        return nonzeros
    return x.nonzero(as_tuple=True)


def _log_factorials(x: torch.Tensor, rows: torch.Tensor, xv: torch.Tensor) -> torch.Tensor:
    """Per row, the sum of ``log x!`` over the non-zeros (a constant: no gradient)."""
    with torch.no_grad():
        return x.new_zeros(x.shape[0]).index_add_(0, rows, torch.lgamma(xv + 1))


def poisson(out: torch.Tensor, x: torch.Tensor, *, library: torch.Tensor, at_nonzeros: bool | None = None,
            nonzeros: tuple[torch.Tensor, torch.Tensor] | None = None, **_) -> torch.Tensor:
    out, x = out.float(), x.float()  # a likelihood in float32, also under bf16/fp16 autocast
    log_q = F.log_softmax(out, dim=1)
    # Σ μ = ℓ Σ q = ℓ: the μ term needs no pass over the genes; log x! only at the non-zeros
    log_lib = library.clamp_min(1.0).log()
    xlog = (x * log_q).sum(dim=1)
    if not _at_nonzeros(x, at_nonzeros):
        xlog = xlog - torch.lgamma(x + 1).sum(dim=1)
    else:
        rows, cols = _nonzeros(x, nonzeros)
        xlog = xlog - _log_factorials(x, rows, x[rows, cols])
    total = x.sum(dim=1)
    return (library.clamp_min(1.0) - total * log_lib - xlog) / x.shape[1]


def nb(
    out: torch.Tensor, x: torch.Tensor, *, library: torch.Tensor, log_theta: torch.Tensor,
    at_nonzeros: bool | None = None, nonzeros: tuple[torch.Tensor, torch.Tensor] | None = None, **_
) -> torch.Tensor:
    out, x, log_theta = out.float(), x.float(), log_theta.float()  # float32 under autocast too
    # with d = log μ − log θ:  θ log(θ/(θ+μ)) = −θ·softplus(d)  and  x log(μ/(θ+μ)) = x·(d − softplus(d))
    d = F.log_softmax(out, dim=1) + library.clamp_min(1.0).log().unsqueeze(1) - log_theta.unsqueeze(0)
    s = F.softplus(d)
    theta = log_theta.exp()
    with torch.autocast(device_type=out.device.type, enabled=False):  # autocast would run it in bf16
        ll = -(s @ theta) + (x * (d - s)).sum(dim=1)
    # lgamma(x + θ) − lgamma(θ) − lgamma(x + 1) is 0 where x = 0: on the CPU, evaluate it at the
    # non-zeros only (most entries are zeros; lgamma and its derivative dominated the cost), with
    # lgamma(θ) once per gene and log x! without a gradient
    if not _at_nonzeros(x, at_nonzeros):
        ll = ll + (torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1)).sum(dim=1)
    else:
        rows, cols = _nonzeros(x, nonzeros)
        xv = x[rows, cols]
        ll = ll.index_add(0, rows, torch.lgamma(xv + theta[cols]) - torch.lgamma(theta)[cols])
        ll = ll - _log_factorials(x, rows, xv)
    return -ll / x.shape[1]


RECONSTRUCTION = {"mse": mse, "bce": bce, "kl": kl, "hellinger": hellinger, "poisson": poisson, "nb": nb}


def reconstruction_loss(cost: str, out: torch.Tensor, x: torch.Tensor, **extra) -> torch.Tensor:
    """Per-cell cost ``cost`` between decoder output ``out`` and target ``x``."""
    return RECONSTRUCTION[check_cost(cost)](out, x, **extra)


def decode(cost: str, out: torch.Tensor) -> torch.Tensor:
    """The reconstruction in the data's own space (for display and metrics)."""
    if cost == "bce":
        return torch.sigmoid(out)
    if cost in PROFILE_COSTS:
        return F.softmax(out, dim=1)
    return out


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-cell KL(N(mu, σ²) ‖ N(0, 1)) of a VAE's latent code."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


LOG_2PI = math.log(2 * math.pi)


def _mmd_kernel(z: torch.Tensor) -> torch.Tensor:
    """The kernel matrix of the MMD penalties: Gaussian kernels at three widths around the median
    squared distance of ``z`` (the width itself is not differentiated), each cell's kernel with
    itself left out (a constant bias), so two samples of one distribution score near 0."""
    d2 = torch.cdist(z, z).pow(2)
    width = d2.detach().median().clamp_min(1e-6)
    kernel = sum(torch.exp(-d2 / (width * s)) for s in (0.25, 1.0, 4.0))
    return kernel - torch.diag(torch.diagonal(kernel))


def _mmd_between(kernel: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """The MMD between the cells of masks ``a`` and ``b``, from :func:`_mmd_kernel`; ``None`` when
    either holds fewer than two cells."""
    n_a, n_b = int(a.sum()), int(b.sum())
    if n_a < 2 or n_b < 2:
        return None
    w = a.to(kernel.dtype) / n_a - b.to(kernel.dtype) / n_b
    return w @ kernel @ w


def batch_mmd(z: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Maximum mean discrepancy between each group's codes and the other groups' codes, summed
    over groups (a scalar; zero when a mini-batch holds fewer than two cells of a group or of the
    rest). Gaussian kernels at three widths around the median squared distance of the mini-batch
    (the width itself is not differentiated), so the penalty does not depend on the code's scale.
    Each cell's kernel with itself is left out, so two samples of one distribution score near 0.
    """
    kernel = _mmd_kernel(z)
    total = z.new_zeros(())
    for g in range(int(n_groups)):
        inside = groups == g
        term = _mmd_between(kernel, inside, ~inside)
        if term is not None:
            total = total + term
    return total


def reference_mmd(z: torch.Tensor, reference: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Maximum mean discrepancy between codes ``z`` and a fixed sample of ``reference`` codes, with
    the kernels of :func:`batch_mmd` (widths from the two samples together); a scalar. ``groups``
    (a code per row of ``z``): the sum over groups of each group's MMD to the reference. A group
    (or a reference) of fewer than two cells adds nothing. Query mapping uses it to pull the query
    onto the reference; the reference is a constant (no gradient reaches it)."""
    reference = reference.detach().to(z.device, z.dtype)
    n = len(z)
    kernel = _mmd_kernel(torch.cat([z, reference]))
    is_ref = torch.arange(n + len(reference), device=z.device) >= n
    if groups is None:
        groups = torch.zeros(n, dtype=torch.long, device=z.device)
    no_ref = torch.zeros(len(reference), dtype=torch.bool, device=z.device)
    total = z.new_zeros(())
    for g in torch.unique(groups).tolist():
        term = _mmd_between(kernel, torch.cat([groups == g, no_ref]), is_ref)
        if term is not None:
            total = total + term
    return total
