"""Time series: tracked cells and time-course expression as sequence AnnData objects.

See :mod:`scnapse.ts._sequences` for the layout (``obsm["sequence"]`` (n, T, F), ``obs["length"]``)
that :func:`scnapse.tl.sequence_embedding`, :func:`~scnapse.tl.train_sequence_classifier` and
:func:`~scnapse.tl.train_forecaster` read.
"""

from ._sequences import Sequences, from_array, get_sequences
from ._synthetic import simulate_damped, simulate_oscillations
from ._timecourse import from_timecourse
from ._tracks import from_tracks, measure_tracks, read_mastodon_csv

__all__ = ["Sequences", "from_array", "from_timecourse", "from_tracks", "get_sequences", "measure_tracks",
           "read_mastodon_csv", "simulate_damped", "simulate_oscillations"]
