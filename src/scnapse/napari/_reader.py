"""npe2 reader of pipeline files: ``File ▸ Open`` on a pipeline ``.yaml`` shows its steps in the
Pipeline panel (Run executes it on its own input). A file that fails its checks is reported, with
its step and the problem, before anything runs."""

from __future__ import annotations

from pathlib import Path


def _is_pipeline(path) -> bool:
    p = Path(str(path))
    if p.suffix.lower() not in (".yaml", ".yml") or not p.is_file():
        return False
    try:
        head = p.read_text(errors="replace")[:20000]
    except OSError:
        return False
    return "steps:" in head


def napari_get_pipeline_reader(path):
    """npe2 reader: a function opening a scnapse pipeline file, or ``None`` for other paths."""
    if isinstance(path, list):
        return read_pipeline if len(path) == 1 and _is_pipeline(path[0]) else None
    return read_pipeline if _is_pipeline(path) else None


def read_pipeline(path) -> list[tuple]:
    """Show the pipeline's steps in the Pipeline panel (no layer yet: Run adds them)."""
    import napari
    from napari.utils.notifications import show_error

    from ..pipeline import Pipeline, PipelineError
    from ..pipeline.replay import session_from_pipeline
    from ._pipeline_panel import panel_for

    path = path[0] if isinstance(path, list) else path
    viewer = napari.current_viewer()
    try:
        pipe = Pipeline.from_yaml(path)
    except (PipelineError, FileNotFoundError) as err:
        show_error(f"scnapse: {err}")
        if viewer is not None:
            panel = panel_for(viewer)
            panel._error(err)
        return [(None,)]
    if viewer is not None:
        panel_for(viewer).show_pipeline(session_from_pipeline(pipe))
    return [(None,)]
