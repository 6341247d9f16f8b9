"""Renderers: a :class:`~leaderboards.robustness.Board` in, file contents out; ``board_files``
collects them all. Importing this package imports none of them (matplotlib is slow to load).
"""
