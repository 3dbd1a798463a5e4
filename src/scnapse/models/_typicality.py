"""How typical a cell is of a classifier's reference cells: the "Unassigned" test for cell types
the model never saw.

A softmax stays confident on cells unlike any training class. The distance used here does not:
the squared Mahalanobis distance (within-class covariance) to the nearest class mean, in a PCA of
the model's input, turned into an empirical p-value against held-out reference cells and
continued by a fitted χ² beyond the farthest of them.
"""

from __future__ import annotations

import numpy as np
import torch


def fit_typicality(model, matrix, train_idx, val_idx, codes, gen, n_components: int = 30) -> None:
    """How typical a cell is of the reference: Mahalanobis distance to the nearest class mean in
    a PCA of the model's input (within-class covariance), turned into an empirical p-value
    against the validation cells. Softmax confidence alone stays high for cell types the model
    never saw; this distance does not."""
    device = matrix.device
    k = len(model.classes)

    def inputs(rows, chunk=4096):
        for s in range(0, len(rows), chunk):
            idx = torch.as_tensor(np.sort(rows[s : s + chunk]), device=device)
            yield idx, model.prep(matrix.take(idx)).double()

    sample = train_idx
    if len(sample) > 5000:
        sample = np.sort(sample[torch.randperm(len(sample), generator=gen)[:5000].numpy()])
    y = torch.cat([b for _, b in inputs(sample)])
    center = y.mean(0)
    d = int(max(1, min(n_components, y.shape[0] - 1, y.shape[1])))
    torch.manual_seed(model.config.resolved_seed)  # svd_lowrank draws a random projection
    _, _, v = torch.svd_lowrank(y - center, q=d, niter=4)
    del y
    labels = torch.as_tensor(codes, device=device)
    total = torch.zeros(k, d, dtype=torch.float64, device=device)
    n = torch.zeros(k, dtype=torch.float64, device=device)
    for idx, b in inputs(train_idx):
        z = (b - center) @ v
        total.index_add_(0, labels[idx], z)
        n.index_add_(0, labels[idx], torch.ones(len(idx), dtype=torch.float64, device=device))
    means = total / n.clamp_min(1).unsqueeze(1)
    cov = torch.zeros(d, d, dtype=torch.float64, device=device)
    for idx, b in inputs(train_idx):
        r = (b - center) @ v - means[labels[idx]]
        cov += r.T @ r
    cov /= max(len(train_idx) - k, 1)
    cov += (1e-3 * torch.trace(cov) / d + 1e-8) * torch.eye(d, dtype=torch.float64, device=device)
    # whiten: P = L Lᵀ, so (z − μ)ᵀ P (z − μ) = ‖(z − μ) L‖²
    chol = torch.linalg.cholesky(torch.linalg.inv(cov))
    model.typ_projection = (v @ chol).float()
    model.typ_offset = (center @ v @ chol).float()
    model.typ_means = (means @ chol).float()
    ref_rows = val_idx if len(val_idx) else train_idx
    dist = torch.cat([typicality_distance(model, b.float() @ model.typ_projection) for _, b in inputs(ref_rows)])
    model.typ_reference = torch.sort(dist).values.cpu()
    model.metrics["typicality_reference"] = "validation cells" if len(val_idx) else "training cells"

def typicality_distance(model, projected: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distance to the nearest class mean, from ``input @ typ_projection``."""
    w = projected - model.typ_offset.to(projected.device)
    means = model.typ_means.to(w.device)
    # ‖w − μ‖² = ‖w‖² − 2 w·μ + ‖μ‖² (one small matrix product; cdist is slower here)
    d2 = (w * w).sum(1, keepdim=True) - 2 * w @ means.T + (means * means).sum(1)
    return d2.min(dim=1).values.clamp_min(0)

def typicality_pvalue(model, distance: torch.Tensor) -> np.ndarray:
    """Fraction of reference (validation) cells at least as far from a class, ``(1 + #) / (1 + n)``.

    Beyond the farthest reference cell this fraction stops falling at ``1 / (1 + n)``; there a
    scaled χ² fitted to the reference distances (by their mean and variance) continues it."""
    from scipy.stats import chi2

    ref = model.typ_reference.double()
    d = distance.detach().cpu().double().contiguous()
    farther = len(ref) - torch.searchsorted(ref, d, right=False)
    p = ((1 + farther).double() / (1 + len(ref))).numpy()
    beyond = (d > ref[-1]).numpy() if len(ref) else np.ones(len(d), dtype=bool)
    if beyond.any() and len(ref) > 2:
        mean, var = float(ref.mean()), float(ref.var())
        scale, dof = var / (2 * mean), 2 * mean**2 / var
        p[beyond] = np.minimum(p[beyond], chi2.sf(d.numpy()[beyond] / scale, dof))
    return p.astype(np.float32)

