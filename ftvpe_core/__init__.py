"""FT vs PE Studio core: models, prompt building, generation, figures and the CLI.

Nothing here imports streamlit except ``ftvpe_core.ui``.
"""

from pathlib import Path

__version__ = "0.1.0"

HOME_DIR = Path(__file__).resolve().parent.parent
"""The folder that holds ``ftvpe_core`` and ``assets``: a job process's working directory and import path."""
ASSETS_DIR = HOME_DIR / "assets"
"""The built-in datasets, recordings and images."""


class FtvpeError(ValueError):
    """A problem the user can fix; its message is shown as is in the UI and the CLI."""
