"""Per-cell crops from an image and its label image (segmentation), as an AnnData of cells.

One object (label id) becomes one row. The crops are fixed-size windows centred on each object's
centroid, zero-padded where the window leaves the image. Frames of a time-lapse are processed one
at a time, and each object's window is cut from its frame directly, so memory holds one frame and
the crops, never one full image per object; with ``crops_file=`` the crops themselves go to a
``.npy`` file on disk and are read lazily (a NumPy memory map in ``obsm["crops"]``).

Each object also gets hand-made features, computed once (scikit-image ``regionprops``): the shape
of its mask (for 3-D objects, of the mask projected over z) and the statistics of its raw
intensities per channel (over all its pixels / voxels), in ``obsm["features"]``, named in
``uns["crops"]["feature_names"]`` (see :data:`SHAPE_FEATURES`, :data:`INTENSITY_FEATURES`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import ndimage

Normalize = Literal["image", "crop", "none"]
Mask = Literal["none", "neighbors", "background"]
Projection = Literal["max", "mid"]

NORMALIZE = ("image", "crop", "none")
MASKS = ("none", "neighbors", "background")
PROJECTIONS = ("max", "mid")
MIN_SIZE = 8
#: the percentiles that map an image (``normalize="image"``) or a crop (``"crop"``) onto [0, 1]
PERCENTILES = {"image": (1.0, 99.8), "crop": (1.0, 99.0)}
#: shape features of each object (regionprops of its 2-D mask; a 3-D mask projected over z first,
#: except ``area``, which counts the object's own pixels / voxels)
SHAPE_FEATURES = ("area", "perimeter", "eccentricity", "solidity", "extent", "major_axis_length",
                  "minor_axis_length")
#: intensity statistics of each object's raw pixels, per channel (``intensity_mean_<channel>``...)
INTENSITY_FEATURES = ("intensity_mean", "intensity_std", "intensity_min", "intensity_max")


def feature_names(channel_names: list[str]) -> list[str]:
    """The columns of ``obsm["features"]``: the shape features, then the intensity statistics of
    each channel."""
    return list(SHAPE_FEATURES) + [f"{f}_{c}" for c in channel_names for f in INTENSITY_FEATURES]


def _object_features(own: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """Shape features of the mask ``own`` (2-D, or 3-D projected over z) and intensity statistics
    of ``pix`` (object pixels × channels), float64; undefined values (a one-pixel object) are 0."""
    from skimage.measure import regionprops

    area = float(own.sum())
    mask2d = own.any(axis=0) if own.ndim == 3 else own
    # one pixel of background around the mask, so that perimeter and the convex hull see its edge
    props = regionprops(np.pad(mask2d, 1).astype(np.uint8))[0]
    shape = [area, props.perimeter, props.eccentricity, props.solidity, props.extent,
             props.axis_major_length, props.axis_minor_length]
    inten = np.stack([pix.mean(axis=0), pix.std(axis=0), pix.min(axis=0), pix.max(axis=0)], axis=1).ravel()
    out = np.concatenate([np.asarray(shape, dtype=np.float64), inten])
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _choice(name, value, valid):
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(valid)}.")


def _axis(name, axis, ndim, what):
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis!r} is not an axis of the {what} (which has {ndim} dimensions).")
    return int(axis) % ndim


def _check_inputs(image, labels, channel_axis, time_axis):
    """Both arrays as (frames, [z,] y, x[, c]) views; returns image, labels, spatial ndim, n_channels."""
    if not hasattr(image, "shape") or not hasattr(labels, "shape"):
        raise TypeError("image and labels must be arrays (NumPy, or anything with .shape and slicing).")
    if not hasattr(image, "dtype") or not np.issubdtype(np.dtype(image.dtype), np.number) or np.issubdtype(
        np.dtype(image.dtype), np.complexfloating
    ):
        raise ValueError(f"image holds {getattr(image, 'dtype', type(image))} values; it must hold real numbers.")
    ldtype = np.dtype(labels.dtype)
    if ldtype == np.bool_:
        raise ValueError(
            "labels is a boolean mask; it must be a label image with one integer id per object "
            "(0 = background). Turn a mask into labels with skimage.measure.label(mask)."
        )
    if not np.issubdtype(ldtype, np.integer):
        raise ValueError(
            f"labels holds {ldtype} values; it must be an integer label image (0 = background, one id "
            "per object), as cellpose / stardist / skimage.measure.label write. If it holds whole "
            "numbers, convert it with labels.astype(np.int32)."
        )
    channel_axis = _axis("channel_axis", channel_axis, image.ndim, "image")
    if channel_axis is not None:
        image = np.moveaxis(image, channel_axis, -1) if isinstance(image, np.ndarray) else _moveaxis(image, channel_axis)
        spatial_shape = tuple(image.shape[:-1])
    else:
        spatial_shape = tuple(image.shape)
    if spatial_shape != tuple(labels.shape):
        hint = ""
        if channel_axis is None and image.ndim == labels.ndim + 1:
            hint = " The image has one more axis than the labels: pass channel_axis= (e.g. channel_axis=0 or -1)."
        raise ValueError(
            f"image{' (without its channel axis)' if channel_axis is not None else ''} has shape "
            f"{spatial_shape} but labels has shape {tuple(labels.shape)}; they must match pixel for pixel.{hint}"
        )
    time_axis = _axis("time_axis", time_axis, labels.ndim, "labels")
    if time_axis is not None:
        labels = np.moveaxis(labels, time_axis, 0) if isinstance(labels, np.ndarray) else _moveaxis(labels, time_axis, 0)
        if isinstance(image, np.ndarray):
            image = np.moveaxis(image, time_axis, 0)
        else:
            image = _moveaxis(image, time_axis, 0)
    else:
        labels = labels[None]
        image = image[None]
    spatial = labels.ndim - 1
    if spatial not in (2, 3):
        raise ValueError(
            f"labels has {labels.ndim} dimensions; give 2-D (y, x) or 3-D (z, y, x) images "
            f"{'per frame ' if time_axis is not None else ''}(a time-lapse with time_axis=; channels with channel_axis=)."
        )
    if channel_axis is None:
        image = image[..., None]
    return image, labels, spatial, int(image.shape[-1]), channel_axis, time_axis


def _moveaxis(a, source, destination=-1):
    """``np.moveaxis`` for array-likes that support ``transpose`` (dask, zarr via dask)."""
    order = [i for i in range(a.ndim) if i != source]
    order.insert(destination % a.ndim if destination >= 0 else len(order) + 1 + destination, source)
    return a.transpose(order)


def _normalize_window(win: np.ndarray, lo, hi) -> np.ndarray:
    """``(win - lo) / (hi - lo)`` clipped to [0, 1], per channel (last axis); flat channels → 0."""
    span = hi - lo
    flat = span <= 0
    out = (win - lo) / np.where(flat, 1.0, span)
    out = np.clip(out, 0.0, 1.0)
    if flat.any():
        out[..., flat] = 0.0
    return out


def _frame_limits(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo_p, hi_p = PERCENTILES["image"]
    flat = frame.reshape(-1, frame.shape[-1])
    if flat.shape[0] > 2_000_000:  # percentiles of a regular subsample: same numbers, bounded time
        flat = flat[:: flat.shape[0] // 1_000_000]
    lo, hi = np.percentile(flat, [lo_p, hi_p], axis=0)
    return lo.astype(np.float64), hi.astype(np.float64)


def cells_from_labels(
    image,
    labels,
    *,
    size: int = 48,
    channel_axis: int | None = None,
    time_axis: int | None = None,
    normalize: Normalize = "image",
    mask: Mask = "none",
    projection: Projection = "max",
    channel_names: list[str] | None = None,
    crops_file: str | os.PathLike | None = None,
    min_area: int = 1,
) -> AnnData:
    """One row per segmented object, with a fixed-size crop of the image centred on it.

    Parameters
    ----------
    image
        The intensity image: 2-D ``(y, x)``, 3-D ``(z, y, x)``, with a channel axis (``channel_axis``)
        and/or a time axis (``time_axis``). NumPy, or any array that slices (a memory map, dask).
    labels
        Integer label image of the same shape without the channel axis (0 = background, one id
        per object), e.g. from cellpose, stardist or ``skimage.measure.label``.
    size
        Side of the square crops in pixels (8 to the image's smaller side). Objects larger than
        the crop are cut at its edge (``obs["clipped"]`` marks them).
    channel_axis
        The image's channel axis (``None``: one channel). Counted on the image's own axes.
    time_axis
        The labels' time axis for a time-lapse (``None``: one image). Frames are processed one
        after the other; label ids are per frame (``obs["frame"]`` tells them apart).
    normalize
        How intensities are put on a common scale, per channel:

        - ``"image"`` (default): the whole image (each frame of a time-lapse) is mapped so that its
          1st percentile becomes 0 and its 99.8th becomes 1, clipped to [0, 1]. Keeps brightness
          differences between cells, which are often biology.
        - ``"crop"``: each crop on its own (1st → 0, 99th → 1, clipped): removes brightness
          differences between cells and between images, leaving shape and texture.
        - ``"none"``: the raw values as float32.
    mask
        ``"none"``: the crop as it is; ``"neighbors"``: other objects' pixels are set to 0 (the
        object and background stay); ``"background"``: only the object's own pixels are kept.
    projection
        For 3-D objects: ``"max"`` (maximum over the object's z-range) or ``"mid"`` (the slice
        through its centroid).
    channel_names
        Names of the channels, for ``obs`` columns (default ``c0``, ``c1``…).
    crops_file
        Write the crops to this ``.npy`` file and keep a memory map of it in ``obsm["crops"]``
        (read lazily: for many objects). ``None``: crops in memory.
    min_area
        Objects with fewer pixels are skipped.

    Returns
    -------
    AnnData
        An AnnData with no ``X`` and one row per object: ``obs`` ``label``, ``frame`` (time-lapse),
        ``centroid_y``, ``centroid_x`` (``centroid_z`` for 3-D), ``area``, ``mean_intensity_<channel>``,
        ``clipped``; ``obsm["crops"]`` (objects × channels × size × size, float32) and
        ``obsm["spatial"]`` (``x``, ``y`` of the centroid); ``obsm["features"]`` (objects ×
        features, float32: hand-made features from scikit-image ``regionprops`` — area,
        perimeter, eccentricity, solidity, extent, major / minor axis length of the object's mask,
        projected over z for 3-D objects, and the mean, std, min and max of its raw intensities
        per channel), their names in ``uns["crops"]["feature_names"]``; ``uns["crops"]`` records
        every choice.
    """
    size = _check_size(size)
    _choice("normalize", normalize, NORMALIZE)
    _choice("mask", mask, MASKS)
    _choice("projection", projection, PROJECTIONS)
    img, lab, spatial, n_ch, channel_axis, time_axis = _check_inputs(image, labels, channel_axis, time_axis)
    _check_size_fits(size, lab.shape[-2:])
    channel_names = _channel_names(channel_names, n_ch)
    spec = _CropSpec(size, normalize, mask, projection, spatial, n_ch, channel_names, time_axis is not None,
                     int(min_area))
    per_frame = _find_objects(lab)
    n_total = sum(len(ids) for ids, _ in per_frame)
    crops_file = None if crops_file is None else _npy_path(crops_file)
    if crops_file is not None:
        crops = np.lib.format.open_memmap(crops_file, mode="w+", dtype=np.float32, shape=(n_total, n_ch, size, size))
    else:
        crops = np.zeros((n_total, n_ch, size, size), dtype=np.float32)
    rows: list[dict] = []
    try:
        for t, (ids, slices) in enumerate(per_frame):
            if ids:
                frame = _finite_frame(np.asarray(img[t]), t, time_axis is not None)
                rows += _crop_frame(spec, t, frame, np.asarray(lab[t]), ids, slices, crops, len(rows))
    except ValueError:
        if crops_file is not None:  # the file this call began: removed again
            del crops
            os.remove(crops_file)
        raise
    if not rows:
        raise ValueError(f"No object has at least min_area={min_area} pixels; lower min_area.")
    crops = _keep_first(crops, len(rows), n_total, crops_file)
    record = {
        "size": size, "n_channels": n_ch, "channel_names": channel_names, "normalize": normalize,
        "percentiles": list(PERCENTILES.get(normalize, ())), "mask": mask,
        "projection": projection if spatial == 3 else "None", "spatial_dims": spatial,
        "channel_axis": "None" if channel_axis is None else channel_axis,
        "time_axis": "None" if time_axis is None else time_axis,
        "image_shape": [int(s) for s in np.shape(image)], "image_dtype": str(np.dtype(image.dtype)),
        "padding": "zeros", "crops_file": "None" if crops_file is None else str(crops_file),
        "min_area": int(min_area), "feature_names": feature_names(channel_names),
    }
    return _cells(rows, crops, record, time_lapse=spec.time_lapse)


@dataclass(frozen=True)
class _CropSpec:
    """The choices of :func:`cells_from_labels` that every object's crop follows."""

    size: int
    normalize: str
    mask: str
    projection: str
    spatial: int
    n_ch: int
    channel_names: list[str]
    time_lapse: bool
    min_area: int


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"size={size!r} must be an integer number of pixels.")
    return int(size)


def _check_size_fits(size: int, yx: tuple[int, int]) -> None:
    if size < MIN_SIZE:
        raise ValueError(f"size={size} is too small; crops must be at least {MIN_SIZE} pixels wide.")
    if size > min(yx):
        raise ValueError(
            f"size={size} is larger than the image ({yx[0]} × {yx[1]} pixels); choose size <= {min(yx)}."
        )


def _channel_names(channel_names, n_ch: int) -> list[str]:
    if channel_names is None:
        return [f"c{i}" for i in range(n_ch)]
    channel_names = [str(c) for c in channel_names]
    if len(channel_names) != n_ch:
        raise ValueError(f"channel_names has {len(channel_names)} names but the image has {n_ch} channel(s).")
    return channel_names


def _npy_path(crops_file) -> str:
    crops_file = os.fspath(crops_file)
    return crops_file if crops_file.endswith(".npy") else crops_file + ".npy"


def _find_objects(lab) -> list[tuple[list[int], list]]:
    """Per frame: the label ids present and their bounding boxes (one frame in memory at a time)."""
    per_frame = []
    for t in range(lab.shape[0]):
        frame_labels = np.asarray(lab[t])
        if frame_labels.min(initial=0) < 0:
            raise ValueError("labels holds negative ids; label ids must be >= 0 (0 = background).")
        slices = ndimage.find_objects(frame_labels)
        per_frame.append(([i + 1 for i, s in enumerate(slices) if s is not None], slices))
    if not any(ids for ids, _ in per_frame):
        raise ValueError(
            "labels holds no objects (every pixel is 0 = background). Segment the image first "
            "(cellpose, stardist, or skimage.measure.label on a thresholded image)."
        )
    return per_frame


def _crop_frame(spec: _CropSpec, t: int, frame, frame_labels, ids, slices, crops, n: int) -> list[dict]:
    """The ``obs`` rows of one frame's objects (their features under the key ``"_features"``);
    their crops are written to ``crops[n:]``."""
    limits = _frame_limits(frame) if spec.normalize == "image" else None
    rows = []
    for lab_id in ids:
        sl = slices[lab_id - 1]
        own = frame_labels[sl] == lab_id
        if int(own.sum()) < spec.min_area:
            continue
        row = _object_row(spec, t, lab_id, sl, own, frame)
        crops[n + len(rows)] = _object_crop(spec, row, lab_id, sl, frame, frame_labels, limits)
        rows.append(row)
    return rows


def _object_row(spec: _CropSpec, t: int, lab_id: int, sl, own, frame) -> dict:
    """Position, area and mean intensities of one object."""
    coords = np.nonzero(own)
    centroid = [float(c.mean()) + s.start for c, s in zip(coords, sl)]
    pix = frame[sl][own].astype(np.float64)  # (area, channels)
    row = {"label": int(lab_id)}
    if spec.time_lapse:
        row["frame"] = t
    if spec.spatial == 3:
        row["centroid_z"] = centroid[0]
    row["centroid_y"], row["centroid_x"] = centroid[-2], centroid[-1]
    row["area"] = int(own.sum())
    for c, name in enumerate(spec.channel_names):
        row[f"mean_intensity_{name}"] = float(pix[:, c].mean())
    row["_features"] = _object_features(own, pix)
    return row


def _object_crop(spec: _CropSpec, row: dict, lab_id: int, sl, frame, frame_labels, limits) -> np.ndarray:
    """The (channels, size, size) crop centred on one object, zero-padded outside the image;
    sets ``row["clipped"]`` when the object reaches past the crop."""
    size, half = spec.size, spec.size // 2
    ymax, xmax = frame_labels.shape[-2], frame_labels.shape[-1]
    y0, x0 = int(round(row["centroid_y"])) - half, int(round(row["centroid_x"])) - half
    y1, x1 = y0 + size, x0 + size
    vy0, vx0, vy1, vx1 = max(y0, 0), max(x0, 0), min(y1, ymax), min(x1, xmax)
    box_y, box_x = sl[-2], sl[-1]
    row["clipped"] = bool(box_y.start < y0 or box_x.start < x0 or box_y.stop > y1 or box_x.stop > x1)
    if spec.spatial == 3:
        zc = int(round(row["centroid_z"]))
        zsel = slice(sl[0].start, sl[0].stop) if spec.projection == "max" else slice(zc, zc + 1)
        win = frame[zsel, vy0:vy1, vx0:vx1].astype(np.float32)
        win_lab = frame_labels[zsel, vy0:vy1, vx0:vx1]
    else:
        win = frame[None, vy0:vy1, vx0:vx1].astype(np.float32)
        win_lab = frame_labels[None, vy0:vy1, vx0:vx1]
    if spec.normalize == "image":
        win = _normalize_window(win, *limits)
    elif spec.normalize == "crop":
        clo, chi = np.percentile(win.reshape(-1, spec.n_ch), list(PERCENTILES["crop"]), axis=0)
        win = _normalize_window(win, clo, chi)
    if spec.mask == "neighbors":
        win = win * ((win_lab == 0) | (win_lab == lab_id))[..., None]
    elif spec.mask == "background":
        win = win * (win_lab == lab_id)[..., None]
    out = np.zeros((spec.n_ch, size, size), dtype=np.float32)
    # the projection over z (one slice in 2-D / for "mid")
    out[:, vy0 - y0 : vy1 - y0, vx0 - x0 : vx1 - x0] = np.moveaxis(win.max(axis=0), -1, 0)
    return out


def _finite_frame(frame: np.ndarray, t: int, time_lapse: bool) -> np.ndarray:
    """``frame``, or a ``ValueError`` counting its NaN / infinite pixels (they would make NaN crops)."""
    if np.issubdtype(frame.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(frame)))
        if bad:
            where = f" in frame {t}" if time_lapse else ""
            raise ValueError(
                f"The image holds {bad} NaN or infinite pixel(s){where}; they would give NaN crops. Replace "
                "them first (e.g. image = np.nan_to_num(image), or fill them from their neighbours)."
            )
    return frame


def _keep_first(crops, n: int, n_total: int, crops_file: str | None):
    """The first ``n`` crops (objects under ``min_area`` were skipped), on disk when asked."""
    if n == n_total:
        if crops_file is not None:
            crops.flush()
        return crops
    if crops_file is None:
        return crops[:n].copy()
    crops.flush()
    del crops
    full = np.load(crops_file, mmap_mode="r")
    kept = np.array(full[:n])
    del full
    np.save(crops_file, kept)
    return np.load(crops_file, mmap_mode="r+")


def _cells(rows: list[dict], crops, record: dict, *, time_lapse: bool) -> AnnData:
    features = np.stack([row.pop("_features") for row in rows]).astype(np.float32)
    obs = pd.DataFrame(rows)
    if time_lapse:
        obs.index = [f"t{f}_{lab_id}" for f, lab_id in zip(obs["frame"], obs["label"])]
    else:
        obs.index = obs["label"].astype(str).to_numpy()
    obs.index = obs.index.astype(str)
    cells = AnnData(obs=obs)
    # a plain ndarray view of a memory map: read lazily from the file, and writable by write_h5ad
    cells.obsm["crops"] = crops.view(np.ndarray) if isinstance(crops, np.memmap) else crops
    cells.obsm["spatial"] = obs[["centroid_x", "centroid_y"]].to_numpy(dtype=np.float64)
    cells.obsm["features"] = features
    cells.uns["crops"] = record
    return cells
