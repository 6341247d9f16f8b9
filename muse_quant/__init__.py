"""The muse-quant program: the command line, sweeps, audits, the demo, the toy world and the
unlearning recipes. It uses every layer below it (``harness_ext``, ``model_wrappers``,
``leaderboards``); nothing imports it (docs/architecture.md)."""
