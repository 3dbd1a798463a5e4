"""Plain words for the panels: tooltips without docstring markup, errors without Python code.

The tooltips come from the steps' numpy docstrings (so they follow the API), with reST markup
(````x````, ``:func:`~a.b`````) stripped and ``None`` / ``True`` / ``False`` said as the panel shows
them. Options whose docstring is written for programmers get a sentence of their own
(:data:`TOOLTIPS`).
"""

from __future__ import annotations

import re

#: written tooltips (they win over the docstring's) for options the docstrings explain in code
TOOLTIPS = {
    "min_typicality": "Cells that look unlike every reference cell (typicality below this) are called "
                      "\"Unassigned\". 0 never leaves a cell unassigned; 0.01 leaves out the 1% least typical.",
    "size": "Side of the square picture cut around each cell, in pixels. Make it a little larger than "
            "the largest cell; parts outside it are cut off.",
    "normalize": "How brightness is put on a common scale before training: over the whole image (default), "
                 "per crop, or not at all.",
    "hidden": "Sizes of the hidden layers, e.g. \"128, 64\" for two layers. Empty: a single linear layer "
              "(logistic regression).",
    "horizon": "How many time points ahead each forecast predicts.",
    "log_normalize": "Put each cell's counts on a common total and take the log before training "
                     "(auto: only for raw counts).",
    "scale": "Give each gene mean 0 and spread 1 before training (auto: the model's usual choice).",
    "layer": "Which expression values to use: the main matrix X or one of the stored layers.",
    "use_highly_variable": "Use only the highly variable genes (auto: when they have been computed).",
    "mask": "What a crop shows: everything (none), the cell without its neighbours (neighbours), "
            "or only the cell on black (background).",
    "seed": "Starting number of the random choices (first weights, validation cells, shuffling): the same "
            "seed gives the same result.",
    "labels_key": "The column of cell types to learn. Cells without a label are left out; every type needs at "
                  "least 2 cells.",
    "majority_voting": "Also give each cluster (picked below) the type most of its cells get; the per-cell types "
                       "are kept too.",
    "over_clustering": "The column of clusters used for majority voting (e.g. a fine Leiden clustering).",
    "key_added": "Name under which the result is stored (empty: the step's usual name).",
    "n_neighbors": "How many neighbours each cell has in the UMAP graph: larger shows the big picture, smaller "
                   "keeps local detail (usually 2 to 100).",
    "linear_init": "Start from the classical linear model's answer; the network then learns what it misses, and "
                   "the start is kept if training does worse.",
    "model": "Train a new classifier on labelled cells, or load one saved before.",
    "method": "The classical method: PCA, t-SNE or UMAP.",
    "image": "The image whose cells are cut out and learnt from.",
    "labels": "The segmentation: a Labels layer with one number per cell.",
    "task": "What to learn: classify cells into the clicked or labelled classes, or embed them (a map "
            "of similar cells).",
    "tracks": "The tracked cells (a Tracks layer or a sample) to learn from.",
    "batch_key": "The column naming each cell's batch (sample, donor, run, study). The model is told the batch, "
                 "so what it learns holds across batches. Empty: one batch.",
    "threads": "How many CPU threads the training uses. On a shared or busy computer 1 or 2 is often much "
               "faster than many; the default is the number the package is set to use. Saved with the pipeline.",
    "cost_topic": "Cost: what the training makes small (how far the output is from the target).",
    "architecture_topic": "Architecture and activation: the shape of the network and the function each layer "
                          "applies.",
    "regularization_topic": "Regularization: what keeps the network from learning the training cells by heart "
                            "(dropout, penalties, stopping early).",
    "optimizer_topic": "Optimizer: how the weights are moved towards a smaller cost, how fast and for how long.",
    "running_topic": "Running: the seed, the device and the CPU threads (they change speed, not the model).",
    "annotate_button": "Adds a Points layer: click on cells to give them the class typed above.",
}
#: how ``None`` / ``True`` / ``False`` read in the panels
WORDS = {"None": "auto", "True": "on", "False": "off"}

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|mod|obj|exc|ref|doc):`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]*)``")
_TICK = re.compile(r"`([^`]*)`")


def _short(name: str) -> str:
    """``scnapse.models.Autoencoder`` → ``Autoencoder``; ``title <target>`` → ``title``."""
    name = re.sub(r"\s*<[^>]*>", "", name)
    return name.rsplit(".", 1)[-1].rstrip("()")


def plain(text: str) -> str:
    """Docstring text as a person reads it: ``"``mse``"`` → ``mse``, ``":class:`~a.B`"`` → ``B``,
    ````None```` → ``auto``; whitespace collapsed."""
    if not text:
        return ""
    text = _ROLE.sub(lambda m: _short(m.group(1)), text)
    text = _LITERAL.sub(lambda m: WORDS.get(m.group(1), m.group(1).strip('"\'')), text)
    text = _TICK.sub(lambda m: m.group(1), text)
    text = re.sub(r"\*\*([^*]+)\*\*|\*([^*]+)\*", lambda m: m.group(1) or m.group(2), text)
    return re.sub(r"\s+", " ", text).strip()


def tooltip(name: str, text: str, *, limit: int = 600) -> str:
    """The tooltip of option ``name``: the written one, else ``text`` made :func:`plain`."""
    out = TOOLTIPS.get(name) or plain(text)
    return out if len(out) <= limit else out[:limit].rsplit(" ", 1)[0] + " …"


_ASSIGN = re.compile(r"\b([A-Za-z_]\w*)=(None|True|False|'[^']*'|\"[^\"]*\"|[\w.+-]+)")
_CODE = re.compile(r"[`']?\b\w+ = \w+\[[^\n]*?\](?:\.\w+\(\))?[`']?")
_CALL = re.compile(r"\b(?:sc|scanpy|scnapse)\.(?:pp|tl|pl|im)\.(\w+)(?:\([^)]*\))?")


def plain_error(message: str, labels: dict[str, str] | None = None) -> str:
    """An error of the API in the panel's words: ``use_highly_variable=False`` → ``"HVGs only" off``
    (``labels``: option name → its label), ``sc.pp.highly_variable_genes`` → ``highly variable genes``,
    Python statements (``ref = ref[...].copy()``) left out."""
    labels = labels or {}

    def assign(m):
        name, value = m.group(1), m.group(2).strip("'\"")
        label = labels.get(name, name.replace("_", " "))
        return f"\"{label}\" {WORDS.get(value, value)}"

    message = _CODE.sub("", message)
    message = _CALL.sub(lambda m: m.group(1).replace("_", " "), message)
    message = _ASSIGN.sub(assign, message)
    message = _LITERAL.sub(lambda m: m.group(1), message)
    message = re.sub(r"\(\s*\)|\s+(?=[.,;:](?:\s|$))", "", message)
    return re.sub(r"[ \t]{2,}", " ", message).strip()


def widgets_of(container) -> list:
    """Every value widget inside a magicgui ``container`` (nested containers opened)."""
    from magicgui.widgets import Container

    out, todo = [], [container]
    while todo:
        w = todo.pop(0)
        if isinstance(w, Container):
            todo[:0] = list(w)
        elif w is not None:
            out.append(w)
    return out


def word_panel(panel) -> None:
    """Give every field of ``panel`` a plain tooltip (written, else its own made plain)."""
    for part in (getattr(panel, "inputs", None), getattr(panel, "options", None),
                 getattr(panel, "train_options", None)):
        if part is None:
            continue
        for w in widgets_of(part):
            name = w.name or w.label or ""
            if not name and getattr(w, "text", None) == "Annotate cells by clicking":
                name = "annotate_button"
            if name.startswith("more_"):
                topic = TOOLTIPS.get(name.replace("more_", "", 1) + "_topic", "")
                w.tooltip = (topic + " Click to show or fold away its rarely changed options.").strip()
                continue
            w.tooltip = tooltip(name, w.tooltip or "") or w.label
