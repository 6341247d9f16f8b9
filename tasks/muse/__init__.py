"""The MUSE tasks: YAML configs plus ``utils.py``, the functions the YAML names."""
