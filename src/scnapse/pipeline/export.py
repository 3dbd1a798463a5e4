"""A pipeline as a plain Python script that computes the same result.

The script is built as a syntax tree (:mod:`ast`) and printed with :func:`ast.unparse`: every
value from the pipeline (its name, ids, keys, paths, parameter values) becomes a literal
constant, and names of functions come only from the registry, so a pipeline file can never put a
statement of its own into the script.
"""

from __future__ import annotations

import ast
import keyword
import math

from .registry import PipelineError, get_step

_HEADER = "import scanpy\nimport scnapse\nfrom scnapse.pipeline import load_input, write_h5ad_atomic\n"


def export_script(pipe) -> str:
    """The pipeline as a plain Python script: the same steps, with the same resolved parameters
    (seed and device included), so it computes the same result as ``scnapse run``."""
    body: list[ast.stmt] = [ast.Expr(_literal(f"{pipe.name}: exported from a scnapse pipeline by `scnapse export`."))]
    body += ast.parse(_HEADER).body
    body.append(_assign(["adata", "source"], _call("load_input", [_literal(pipe.input)])))
    variables: dict[str, str] = {}  # step id → the variable holding its model
    for step in pipe.steps:
        spec = get_step(step.name)
        params = pipe.resolved_params(step, spec)
        save_model = params.pop("save_model", None)
        ref = params.pop("model", None) if spec.takes_model else None
        args: list[ast.expr] = [ast.Name("adata", ast.Load())]
        if ref is not None:
            args.append(ast.Name(variables[ref], ast.Load()) if ref in variables
                        else _call("scnapse.models.load", [_literal(ref)]))
        call = _call(step.name, args, params)
        if spec.returns_model:
            var = variables[step.id] = _variable(step.id, set(variables.values()))
            body.append(_assign([var], call))
            if save_model:
                body.append(ast.Expr(_call(f"{var}.save", [_literal(save_model)])))
        else:
            body.append(ast.Expr(call))
    if pipe.output:
        body.append(ast.Expr(_call("write_h5ad_atomic", [ast.Name("adata", ast.Load()), _literal(str(pipe.output))])))
    text = ast.unparse(ast.fix_missing_locations(ast.Module(body=body, type_ignores=[])))
    ast.parse(text)  # the script is valid Python by construction; checked once more
    return text + "\n"


def _literal(value) -> ast.expr:
    """``value`` (what YAML can hold) as a constant expression; anything else is refused."""
    if value is None or isinstance(value, (bool, int, str)):
        return ast.Constant(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return ast.Constant(value)
        return _call("float", [ast.Constant(repr(value))])  # float('nan'), float('inf'), float('-inf')
    if isinstance(value, (list, tuple)):
        items = [_literal(v) for v in value]
        return ast.List(items, ast.Load()) if isinstance(value, list) else ast.Tuple(items, ast.Load())
    if isinstance(value, dict):
        return ast.Dict([_literal(k) for k in value], [_literal(v) for v in value.values()])
    raise PipelineError(f"cannot export the value {value!r} ({type(value).__name__}) as a Python literal; "
                        "write it as a number, text, true/false, a list or a mapping.")


def _call(dotted: str, args: list[ast.expr], keywords: dict | None = None) -> ast.Call:
    """A call of the function named ``dotted`` (a registered step or a fixed helper)."""
    parts = dotted.split(".")
    if not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        raise PipelineError(f"cannot export a call to {dotted!r}: not a Python name.")
    func: ast.expr = ast.Name(parts[0], ast.Load())
    for part in parts[1:]:
        func = ast.Attribute(func, part, ast.Load())
    named, extra = [], {}
    for key, value in (keywords or {}).items():
        if isinstance(key, str) and key.isidentifier() and not keyword.iskeyword(key):
            named.append(ast.keyword(key, _literal(value)))
        else:
            extra[key] = value
    if extra:  # a key that is not a Python name is passed as **{"key": value}
        named.append(ast.keyword(None, _literal(extra)))
    return ast.Call(func, args, named)


def _assign(names: list[str], value: ast.expr) -> ast.Assign:
    target = (ast.Name(names[0], ast.Store()) if len(names) == 1
              else ast.Tuple([ast.Name(n, ast.Store()) for n in names], ast.Store()))
    return ast.Assign([target], value)


def _variable(step_id: str, taken: set[str]) -> str:
    """A Python name for the model of step ``step_id``: ASCII letters, digits and ``_`` only,
    unique among ``taken``."""
    base = "model_" + "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in str(step_id))
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    return name
