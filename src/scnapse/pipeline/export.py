"""A pipeline as a plain Python script that computes the same result."""

from __future__ import annotations

from .registry import get_step


def export_script(pipe) -> str:
    """The pipeline as a plain Python script: the same steps, with the same resolved parameters
    (seed and device included), so it computes the same result as ``scnapse run``."""
    lines = [
        f'"""{pipe.name}: exported from a scnapse pipeline by `scnapse export`."""',
        "import scanpy",
        "import scnapse",
        "from scnapse.pipeline import load_input, write_h5ad_atomic",
        "",
        f"adata, source = load_input({pipe.input!r})",
    ]
    models: set[str] = set()
    for step in pipe.steps:
        spec = get_step(step.name)
        params = pipe.resolved_params(step, spec)
        save_model = params.pop("save_model", None)
        ref = params.pop("model", None) if spec.takes_model else None
        args = "".join(f", {k}={v!r}" for k, v in params.items())
        if ref is not None:
            model_arg = _var(ref) if ref in models else f"scnapse.models.load({ref!r})"
            lines.append(f"{step.name}(adata, {model_arg}{args})")
        elif spec.returns_model:
            models.add(step.id)
            lines.append(f"{_var(step.id)} = {step.name}(adata{args})")
            if save_model:
                lines.append(f"{_var(step.id)}.save({save_model!r})")
        else:
            lines.append(f"{step.name}(adata{args})")
    if pipe.output:
        lines += ["", f"write_h5ad_atomic(adata, {str(pipe.output)!r})"]
    return "\n".join(lines) + "\n"


def _var(step_id: str) -> str:
    return "model_" + "".join(c if c.isalnum() else "_" for c in step_id)
