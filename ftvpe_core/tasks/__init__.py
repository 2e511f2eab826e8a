"""What is asked and how it is scored: datasets and their serialiser (``datasets``), prompt techniques and presets
(``prompts``, ``presets``), constraint checks (``checks``), metrics, tasks and arms answered through the engine
(``evaluate``).
"""
