"""Measurements built on the engine and the tasks: the four-arm comparison, a job of kind 'compare' (``compare``),
the token lens (``lens``) and the HTML reports (``report``).
"""
