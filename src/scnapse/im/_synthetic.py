"""A synthetic fluorescence-like image with two kinds of cells, for tests, demos and benchmarks.

``kind="texture"``: both kinds are discs of the same size distribution and the same distribution
of pixel intensities (mean, spread, minimum, maximum all alike); one is *striped* (a grating of
random orientation), the other *speckled* (a smooth random field). Only the spatial pattern tells
them apart, which per-object intensity statistics (``regionprops``) cannot see.
``kind="size"``: both speckled, one small and one large: the case hand-made features handle.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.special import ndtr

KINDS = ("texture", "size")


def _arcsine(z: np.ndarray) -> np.ndarray:
    """A standard-normal field mapped to the marginal of ``sin`` of a uniform phase (so a
    speckle has exactly the intensity histogram of a grating)."""
    return np.sin(np.pi * (ndtr(z) - 0.5))


def synthetic_image(
    n_per_class: int = 50,
    *,
    kind: str = "texture",
    spacing: int = 36,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image, its label image and each object's class.

    Parameters
    ----------
    n_per_class
        Objects of each of the two classes.
    kind
        ``"texture"`` (striped vs speckled, same size) or ``"size"`` (small vs large, same texture).
    spacing
        Distance between object centres on the grid (objects are jittered a little).
    seed
        Random seed.

    Returns
    -------
    tuple[np.ndarray, np.ndarray, np.ndarray]
        ``image`` (float32, values about 0–1), ``labels`` (int32, ids 1…N), ``classes`` (array of N
        class names; ``classes[i]`` is the class of label ``i + 1``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not valid; choose one of {list(KINDS)}.")
    rng = np.random.default_rng(seed)
    names = ("striped", "speckled") if kind == "texture" else ("small", "large")
    classes = np.repeat(np.array(names, dtype=object), n_per_class)
    rng.shuffle(classes)
    n = len(classes)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    shape = (rows * spacing, cols * spacing)
    image = np.full(shape, 0.05, dtype=np.float64)
    labels = np.zeros(shape, dtype=np.int32)
    yy, xx = np.mgrid[0:spacing, 0:spacing].astype(np.float64)
    for i, cls in enumerate(classes):
        r0, c0 = divmod(i, cols)
        if kind == "texture":
            radius = rng.uniform(10.5, 13.0)
        else:
            radius = rng.uniform(7.5, 9.5) if cls == "small" else rng.uniform(11.5, 13.5)
        jitter = spacing / 2 - radius - 2
        cy = spacing / 2 + rng.uniform(-jitter, jitter) if jitter > 0 else spacing / 2
        cx = spacing / 2 + rng.uniform(-jitter, jitter) if jitter > 0 else spacing / 2
        # slightly elliptic discs of random orientation
        a = rng.uniform(0, np.pi)
        e = rng.uniform(0.85, 1.0)
        dy, dx = yy - cy, xx - cx
        u, v = dx * np.cos(a) + dy * np.sin(a), -dx * np.sin(a) + dy * np.cos(a)
        inside = (u / radius) ** 2 + (v / (radius * e)) ** 2 <= 1.0
        if cls == "striped":
            theta, period, phase = rng.uniform(0, np.pi), rng.uniform(5.0, 7.0), rng.uniform(0, 2 * np.pi)
            pattern = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)
        else:
            field = ndimage.gaussian_filter(rng.standard_normal((spacing, spacing)), 1.5)
            pattern = _arcsine((field - field.mean()) / field.std())
        brightness = rng.uniform(0.45, 0.65)
        cell = brightness * (1.0 + 0.45 * pattern)
        sl = (slice(r0 * spacing, (r0 + 1) * spacing), slice(c0 * spacing, (c0 + 1) * spacing))
        image[sl][inside] = cell[inside]
        labels[sl][inside] = i + 1
    image = ndimage.gaussian_filter(image, 0.7) + rng.normal(0, 0.02, shape)
    return image.astype(np.float32), labels, classes
