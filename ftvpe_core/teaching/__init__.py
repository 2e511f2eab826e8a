"""The classroom: class challenges (``challenges``: keys, joining, submitting; ``scoring``: the 'challenge' kind of
run; ``results``: boards and exports), classroom mode (``classroom``), the quiz and the teaching text (``quiz``,
``lessons``, ``content``).
"""
