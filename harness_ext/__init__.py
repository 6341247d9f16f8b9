"""The ground of muse-quant: what every other layer stands on, importing nothing of theirs.

Errors, files (hashing, atomic writes, staged folders), the cache root, library versions, the
MUSE data layout, the metrics, precision names, and the task logic ``tasks/muse/utils.py``
calls. ``model_wrappers``, ``leaderboards`` and the ``muse_quant`` program import from here;
nothing here imports them (docs/architecture.md).
"""

__version__ = "0.1.0"
