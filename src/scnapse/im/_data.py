"""The real images shipped in ``sample_data/images/`` (see ``sample_data/SOURCES.md``)."""

from __future__ import annotations

import numpy as np

#: name → (image file, labels file, what it is)
SAMPLE_IMAGES = {
    "dsb2018": ("images/dsb2018_nuclei_img.tif", "images/dsb2018_nuclei_labels.tif",
                "512×512 fluorescence nuclei, 125 labelled (Data Science Bowl 2018 via stardist; CC0)"),
    "bbbc007_a9": ("images/bbbc007_A9_p5d.tif", "images/bbbc007_A9_p5d_labels.tif",
                   "450×450 Drosophila Kc167 DNA stain, 111 cells (BBBC007, plate A9; CC BY 3.0)"),
    "bbbc007_20p1": ("images/bbbc007_20P1_POS0007.tif", "images/bbbc007_20P1_POS0007_labels.tif",
                     "400×400 Drosophila Kc167 DNA stain, 85 cells (BBBC007, plate 20P1; CC BY 3.0)"),
}


def sample_image(name: str = "dsb2018") -> tuple[np.ndarray, np.ndarray]:
    """A real image and its label image from scnapse's sample data (no download).

    Parameters
    ----------
    name
        ``"dsb2018"`` (fluorescence nuclei), ``"bbbc007_a9"`` or ``"bbbc007_20p1"`` (Drosophila
        cells, DNA stain).

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        ``(image, labels)`` as NumPy arrays; give them to :func:`scnapse.im.cells_from_labels`.
    """
    import tifffile

    from ..datasets import sample_path

    if name not in SAMPLE_IMAGES:
        raise ValueError(f"name={name!r} is not a sample image; choose one of {list(SAMPLE_IMAGES)}.")
    img_file, lab_file, _ = SAMPLE_IMAGES[name]
    return tifffile.imread(sample_path(img_file)), tifffile.imread(sample_path(lab_file))
