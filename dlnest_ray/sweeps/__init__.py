"""Sweeps: search spaces expanded into trials, and early-stopping rules over their metrics.

:mod:`.space` parses ``KEY=SPEC`` items and sweep files and expands them into trial assignments;
:mod:`.stopping` decides which running trials a median or ASHA rule stops at an epoch boundary;
:mod:`.plan`, :mod:`.records` and :mod:`.ranking` are a sweep's trials, its records and its ranking.
Import from the modules: the package itself imports nothing, so a CLI process that only reads a sweep's
record does not load the parsers (issue 16).
"""
