"""FT vs PE Studio core: models, prompt building, generation, fine-tuning, comparisons, class challenges, the CLI.

The core is in wings (subpackages). Each wing imports only itself and the wings before it in this list, never one
after it, not even inside a function, and no two modules import each other in a circle
(``tests/test_layering.py`` reads this list and holds both):

1. ``settings``: configuration from the environment (data folder, model, device, Ray address). A module.
2. ``store/``: the run store (``runs``: SQLite records, metrics, artifacts), the fair queue's order (``schedule``),
   learners' names (``names``), the shipped recorded runs (``recordings``).
3. ``model/``: loading and converting models (``models``), 4-bit and int8 weights (``quant``), the decoding step
   (``fastpath``), the one engine that generates (``engine``), chat and next-token views (``generation``), adapter
   files (``adapters``) and what an adapter changes (``weights``).
4. ``tasks/``: datasets and their serialiser (``datasets``), prompt techniques (``prompts``, ``presets``),
   constraint checks (``checks``), scoring answers and arms (``evaluate``).
5. ``training/``: the LoRA training loop, its settings and presets (``finetune``), a fine-tuning run as a job
   (``tuning``: submit, execute, resume, on a Ray node).
6. ``figures/``: the plotly figures, by subject.
7. ``studies/``: the four-arm comparison (``compare``), the token lens (``lens``), the HTML reports (``report``).
8. ``teaching/``: class challenges (``challenges``), classroom mode (``classroom``), the quiz, the lessons'
   and the pages' teaching text (``lessons``, ``content``).
9. ``jobs/``: the job-kind registry (``kinds``: the one table that names each kind of run, its lane and whether
   Ray may run it), the job processes (``worker``), the runner interface (``runners``: local or Ray), the Ray
   dispatcher (``ray_runner``), the CLI's foreground runs (``foreground``).
10. ``cli``: the command line (``python -m ftvpe_core``). A module.
11. ``ui/``: everything Streamlit (loaders, views, the pages' parts) and the words of a challenge's room
    (``room``); nothing else imports streamlit.

This module itself (``FtvpeError``, the package's folders) imports nothing of the core and may be imported by all.
"""

from pathlib import Path

__version__ = "0.1.0"

HOME_DIR = Path(__file__).resolve().parent.parent
"""The folder that holds ``ftvpe_core`` and ``assets``: a job process's working directory and import path."""
ASSETS_DIR = HOME_DIR / "assets"
"""The built-in datasets, recordings and images."""


class FtvpeError(ValueError):
    """A problem the user can fix; its message is shown as is in the UI and the CLI."""
