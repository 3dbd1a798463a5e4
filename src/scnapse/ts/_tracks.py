"""Tracked cells → sequences: tracking tables, napari Tracks data, and a time-lapse Labels image."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from anndata import AnnData

from ._sequences import pack_sequences


def _tracks_frame(tracks, track_key: str, time_key: str) -> tuple[pd.DataFrame, str, str, dict | None]:
    """A DataFrame from a table, a napari Tracks ``data`` array, or a Tracks layer (data + features),
    and the layer's lineage ``graph`` when it has one."""
    if isinstance(tracks, pd.DataFrame):
        return tracks, track_key, time_key, None
    features = graph = None
    if hasattr(tracks, "data") and not isinstance(tracks, np.ndarray):  # a napari Tracks layer
        features = getattr(tracks, "features", None)
        graph = getattr(tracks, "graph", None) or None
        tracks = tracks.data
    arr = np.asarray(tracks)
    if arr.ndim != 2 or arr.shape[1] not in (4, 5):
        raise ValueError(
            "tracks must be a DataFrame (one row per object per time point) or napari Tracks data: an "
            f"array (N, 4) [track_id, t, y, x] or (N, 5) [track_id, t, z, y, x]; got shape {arr.shape}."
        )
    cols = ["track_id", "frame", *(["z", "y", "x"] if arr.shape[1] == 5 else ["y", "x"])]
    df = pd.DataFrame(arr, columns=cols)
    df["track_id"] = df["track_id"].astype(np.int64)
    if features is not None and len(features):
        feats = pd.DataFrame(features).reset_index(drop=True)
        if len(feats) == len(df):
            df = pd.concat([df, feats.drop(columns=[c for c in feats.columns if c in df.columns])], axis=1)
    return df, "track_id", "frame", graph


def _lineage_columns(ids, graph: dict) -> pd.DataFrame:
    """``parent``, ``n_children`` and ``divides`` per track from a napari graph {child: [parents]}."""
    children: dict = {}
    parent = {}
    for child, parents in graph.items():
        parents = [parents] if np.isscalar(parents) else list(parents)
        parent[child] = parents[0] if parents else -1
        for par in parents:
            children[par] = children.get(par, 0) + 1
    n_children = np.array([children.get(i, 0) for i in ids], dtype=np.int64)
    return pd.DataFrame({"parent": [parent.get(i, -1) for i in ids], "n_children": n_children,
                         "divides": n_children >= 2})


def from_tracks(
    tracks,
    *,
    features: list[str] | None = None,
    track_key: str = "track_id",
    time_key: str = "frame",
    obs_keys: list[str] | None = None,
    graph: dict | None = None,
    dropna: bool = False,
    key: str = "sequence",
) -> AnnData:
    """One sequence per track from a tracking table or napari Tracks data.

    Parameters
    ----------
    tracks
        A DataFrame with one row per object per time point (e.g. ``measure_tracks`` output, a
        TrackMate / Mastodon spot table, a napari Tracks layer's CSV), or napari Tracks ``data``
        (array ``[track_id, t, (z), y, x]``), or a Tracks layer (its ``features`` are joined).
        For raw napari data, ``track_key`` / ``time_key`` are ``"track_id"`` / ``"frame"``.
    features
        Columns that form each step's feature vector. ``None``: every numeric column except the
        track and time columns.
    track_key, time_key
        The columns naming the track and the time point (frame index, hours, seconds…).
    obs_keys
        Columns copied to ``obs`` (one value per track: its last time point's). ``None``: every
        non-feature column whose value is constant within each track (track labels, lineage ids).
    graph
        Lineage as napari Tracks writes it, ``{track_id: [parent ids]}`` (taken from a Tracks layer
        when not given). Adds ``obs["parent"]``, ``obs["n_children"]`` and ``obs["divides"]`` (the
        track ends in a division: two or more children) — labels for "which cells divide".
    dropna
        ``False``: refuse NaN in the feature columns. ``True``: drop those time points; they
        become gaps, seen by the models through the time between steps.
    key
        ``obsm`` key to write.

    Returns
    -------
    AnnData
        AnnData with one row per track (``obs_names`` = track ids), ``obsm[key]`` (n, T, F) padded with
        zeros after ``obs["length"]`` steps, ``obsm[key + "_time"]`` (the time of each step),
        ``obs[track_key, "length", "start", "end", "n_gaps"]`` and ``X`` = per-track mean of each
        feature. Steps are the track's observations in time order; a missing frame is a gap (not an
        invented value), counted in ``obs["n_gaps"]``.
    """
    df, track_key, time_key, layer_graph = _tracks_frame(tracks, track_key, time_key)
    graph = layer_graph if graph is None else graph
    features = _feature_columns(df, features, track_key, time_key)
    _check_tracks_table(df, track_key, time_key)
    df = _finite_rows(df, features, track_key, dropna)
    df = df.assign(_t=pd.to_numeric(df[time_key]).astype(np.float64)).sort_values([track_key, "_t"], kind="stable")
    groups = df.groupby(track_key, sort=True)
    obs_keys = _obs_keys(df, groups, obs_keys, [track_key, time_key, "_t", *features])
    step = _typical_step(df, track_key)
    seqs, tlist, rows = [], [], []
    for tid, g in groups:
        t = g["_t"].to_numpy()
        seqs.append(g[features].to_numpy(dtype=np.float32))
        tlist.append(t)
        n_gaps = int(np.round((np.diff(t) / step) - 1).clip(min=0).sum()) if len(t) > 1 and step > 0 else 0
        rows.append({track_key: tid, "start": t[0], "end": t[-1], "n_gaps": n_gaps,
                     **{c: g[c].iloc[-1] for c in obs_keys}})
    obs = pd.DataFrame(rows)
    obs.index = pd.Index([str(v) for v in obs[track_key]])
    if not obs.index.is_unique:
        obs.index = pd.Index([f"{track_key}_{i}" for i in range(len(obs))])
    if graph:
        lineage = _lineage_columns(obs[track_key].tolist(), graph)
        for c in lineage.columns:
            if c not in obs.columns:
                obs[c] = lineage[c].to_numpy()
    info = {"source": "tracks", "track_key": track_key, "time_key": time_key, "time_step": float(step)}
    return pack_sequences(seqs, tlist, list(features), obs, key=key, info=info)


def _feature_columns(df: pd.DataFrame, features, track_key: str, time_key: str) -> list[str]:
    """The feature columns asked for (``None``: every numeric column but track and time), checked."""
    for what, col in (("track_key", track_key), ("time_key", time_key)):
        if col not in df.columns:
            raise KeyError(f"{what}={col!r} is not a column of the tracks table; columns: {list(df.columns)}.")
    if len(df) == 0:
        raise ValueError("The tracks table is empty.")
    if features is None:
        features = [c for c in df.columns if c not in (track_key, time_key)
                    and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
        if not features:
            raise ValueError("The tracks table has no numeric feature column; name them with features=[...].")
    elif isinstance(features, str):
        features = [features]
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise KeyError(f"features {missing} are not columns of the tracks table; columns: {list(df.columns)}.")
    nonnum = [f for f in features if not pd.api.types.is_numeric_dtype(df[f])]
    if nonnum:
        raise ValueError(f"features {nonnum} are not numeric; sequences need numbers.")
    return list(features)


def _check_tracks_table(df: pd.DataFrame, track_key: str, time_key: str) -> None:
    """Numeric times, no missing track id, one row per track per time point."""
    times = pd.to_numeric(df[time_key], errors="coerce")
    if times.isna().any():
        raise ValueError(f"The time column {time_key!r} holds {int(times.isna().sum())} missing or non-numeric value(s).")
    if df[track_key].isna().any():
        raise ValueError(f"The track column {track_key!r} holds {int(df[track_key].isna().sum())} missing value(s).")
    dup = df.duplicated([track_key, time_key], keep=False)
    if dup.any():
        ids = pd.unique(df.loc[dup, track_key])
        raise ValueError(
            f"{len(ids)} track(s) have more than one row at the same time point (e.g. {track_key}="
            f"{list(ids[:3])}). A track that divides holds both daughters at once: give each branch its "
            "own id (Mastodon: 'Branch spot ID'; napari Tracks: one id per branch with a graph), or "
            "drop duplicate rows (df.drop_duplicates([track_key, time_key]))."
        )


def _finite_rows(df: pd.DataFrame, features: list[str], track_key: str, dropna: bool) -> pd.DataFrame:
    """``df`` without the rows whose features hold NaN or inf (``dropna=True``), or an error."""
    bad = ~np.isfinite(df[features].astype(np.float64).to_numpy()).all(axis=1)
    if not bad.any():
        return df
    if not dropna:
        raise ValueError(
            f"{int(bad.sum())} row(s) of the features {features} hold NaN or infinite values (tracks "
            f"{list(pd.unique(df.loc[bad, track_key])[:3])} …). Pass dropna=True to drop those time "
            "points (they become gaps), or fill them first."
        )
    df = df.loc[~bad]
    if len(df) == 0:
        raise ValueError("Every row holds NaN in some feature; nothing is left after dropna=True.")
    return df


def _obs_keys(df: pd.DataFrame, groups, obs_keys, used: list[str]) -> list[str]:
    """The columns copied to ``obs``; ``None``: the other columns constant within every track."""
    if obs_keys is not None:
        missing = [c for c in obs_keys if c not in df.columns]
        if missing:
            raise KeyError(f"obs_keys {missing} are not columns of the tracks table.")
        return list(obs_keys)
    others = [c for c in df.columns if c not in used]
    constant = groups[others].nunique(dropna=False).le(1).all() if others else pd.Series(dtype=bool)
    return [c for c in others if bool(constant.get(c, False))]


def _typical_step(df: pd.DataFrame, track_key: str) -> float:
    d = df.groupby(track_key)["_t"].diff().dropna()
    d = d[d > 0]
    return float(d.min()) if len(d) else 1.0


def measure_tracks(
    labels_t: np.ndarray,
    image_t: np.ndarray | None = None,
    *,
    spacing: tuple[float, ...] | None = None,
) -> pd.DataFrame:
    """Per-label, per-frame measurements of a time-lapse Labels image (label id = track id).

    Parameters
    ----------
    labels_t
        Integer labels, shape (T, Y, X) or (T, Z, Y, X); 0 is background and label ``k`` in every
        frame is track ``k`` (as napari's tracking plugins and TGMM/Mastodon exports write them).
    image_t
        Intensities of the same shape (one channel), or ``None`` for geometry only.
    spacing
        Physical size of a pixel/voxel along each spatial axis (default 1).

    Returns
    -------
    pd.DataFrame
        DataFrame with ``track_id``, ``frame``, ``centroid-z`` (3-D) / ``centroid-y`` / ``centroid-x``
        (in pixels), ``area`` (2-D) or ``volume`` (3-D) (pixel count × pixel size) and, with an image,
        ``intensity_mean``, ``intensity_std``, ``intensity_max``, ``intensity_sum``. Ready for
        :func:`from_tracks` (``track_key="track_id"``, ``time_key="frame"``).
    """
    labels_t = np.asarray(labels_t)
    if labels_t.ndim not in (3, 4):
        raise ValueError(f"labels_t must be (T, Y, X) or (T, Z, Y, X); got shape {labels_t.shape}.")
    if not np.issubdtype(labels_t.dtype, np.integer):
        if np.issubdtype(labels_t.dtype, np.floating) and np.all(labels_t == np.round(labels_t)):
            labels_t = labels_t.astype(np.int64)
        else:
            raise ValueError(f"labels_t must hold integer labels, not {labels_t.dtype} values.")
    if (labels_t < 0).any():
        raise ValueError("labels_t holds negative labels; labels are 0 (background) or positive ids.")
    if image_t is not None:
        image_t = np.asarray(image_t)
        if image_t.shape != labels_t.shape:
            raise ValueError(
                f"image_t has shape {image_t.shape} but labels_t has {labels_t.shape}; give one channel "
                "of the same time-lapse (e.g. image[:, channel])."
            )
    nd = labels_t.ndim - 1
    spacing = (1.0,) * nd if spacing is None else tuple(float(s) for s in spacing)
    if len(spacing) != nd:
        raise ValueError(f"spacing has {len(spacing)} values for {nd} spatial axes.")
    axes = ["z", "y", "x"][-nd:]
    size_name = "volume" if nd == 3 else "area"
    unit = float(np.prod(spacing))
    parts = []
    for t in range(labels_t.shape[0]):
        lab = labels_t[t].ravel()
        ids = np.unique(lab)
        ids = ids[ids > 0]
        if not len(ids):
            continue
        inv = np.searchsorted(ids, lab)
        fg = lab > 0
        inv = inv[fg]
        count = np.bincount(inv, minlength=len(ids)).astype(np.float64)
        row = {"track_id": ids.astype(np.int64), "frame": np.full(len(ids), t, dtype=np.int64)}
        coords = np.unravel_index(np.flatnonzero(fg), labels_t.shape[1:])
        for ax, c in zip(axes, coords):
            row[f"centroid-{ax}"] = np.bincount(inv, weights=c, minlength=len(ids)) / count
        row[size_name] = count * unit
        if image_t is not None:
            v = image_t[t].ravel()[fg].astype(np.float64)
            s = np.bincount(inv, weights=v, minlength=len(ids))
            mean = s / count
            sq = np.bincount(inv, weights=v * v, minlength=len(ids)) / count
            vmax = np.full(len(ids), -np.inf)
            np.maximum.at(vmax, inv, v)
            row.update(intensity_mean=mean, intensity_std=np.sqrt(np.maximum(sq - mean**2, 0)),
                       intensity_max=vmax, intensity_sum=s)
        parts.append(pd.DataFrame(row))
    if not parts:
        raise ValueError("labels_t holds no labelled object in any frame.")
    return pd.concat(parts, ignore_index=True)


def read_mastodon_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Mastodon/TrackMate spot table (header row, then unit rows) as numbers.

    Rows under the header that are not data (Mastodon writes two: a description and the units)
    are dropped. When the table has ``Spot N links outgoing`` and ``Branch spot ID`` a column
    ``divides`` is added: True for every spot of a branch whose last spot has two outgoing links
    (the branch ends in a division). Use ``track_key="Branch spot ID"`` with :func:`from_tracks`:
    a branch holds one cell per frame, a Mastodon track (a lineage) holds both daughters.

    Parameters
    ----------
    path
        The ``.csv`` (or ``.csv.gz``) file.

    Returns
    -------
    pandas.DataFrame
        One row per spot, numeric columns as numbers.
    """
    df = pd.read_csv(path, skipinitialspace=False)
    first = df.columns[0]
    keep = pd.to_numeric(df[first], errors="coerce").notna()
    df = df.loc[keep].reset_index(drop=True)
    for c in df.columns:
        df[c] = _to_numeric(df[c])
    if {"Spot N links outgoing", "Branch spot ID", "frame"} <= set(df.columns):
        last = df.sort_values("frame").groupby("Branch spot ID").tail(1)
        divides = set(last.loc[last["Spot N links outgoing"] == 2, "Branch spot ID"])
        df["divides"] = df["Branch spot ID"].isin(divides)
    return df


def _to_numeric(col: pd.Series) -> pd.Series:
    out = pd.to_numeric(col, errors="coerce")
    return out if out.notna().sum() == col.notna().sum() else col
