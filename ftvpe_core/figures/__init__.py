"""Plotly figure builders: pure functions from data to ``plotly.graph_objects.Figure``, by subject (``prompting``,
``training``, ``comparison``, ``challenge``; shared colours and helpers in ``common``), every public one named here.

No data gives an empty figure with its title, never an exception. Nothing here computes model outputs.
"""

# Imported before plotly on purpose: plotly looks numpy up in sys.modules without the import lock, so
# a model loading in another thread (torch imports numpy) could hand it a half-imported module.
import numpy  # noqa: F401

from ftvpe_core.figures.challenge import (  # noqa: F401
    CHALLENGE_TRACKS,
    CHART_FONT,
    challenge_points,
    challenge_scores,
)
from ftvpe_core.figures.common import (  # noqa: F401
    ARM_COLORS,
    METRIC_WORDS,
    RUN_COLORS,
    TECHNIQUE_COLORS,
    metric_words,
)
from ftvpe_core.figures.comparison import (  # noqa: F401
    WEIGHT_COLUMNS,
    ZERO_EXAMPLES_AT,
    ablation_chart,
    arm_scores,
    break_even,
    break_even_calls,
    combination_label,
    data_efficiency,
    technique_gains_chart,
    words_vs_weights,
)
from ftvpe_core.figures.prompting import (  # noqa: F401
    LENS_COLORS,
    LENS_HIGHLIGHT,
    _token_label,
    lens_position,
    lens_track,
    next_token_chart,
    prompt_token_bar,
)
from ftvpe_core.figures.training import (  # noqa: F401
    loss_curves,
    loss_overlay,
    parameter_share,
    token_length_histogram,
)
