"""FT vs PE Studio core: models, prompt building, generation, figures and the CLI.

Nothing here imports streamlit except ``ftvpe_core.ui``.
"""

__version__ = "0.1.0"


class FtvpeError(ValueError):
    """A problem the user can fix; its message is shown as is in the UI and the CLI."""
