"""Models and the one engine: loading and converting (``models``), 4-bit and int8 weights (``quant``), the decoding
step (``fastpath``), the batch-invariant scheduler every caller submits to (``engine``), chat and next-token views
(``generation``), adapter files (``adapters``) and what an adapter changes (``weights``). Imports ``settings`` and
``store``.
"""
