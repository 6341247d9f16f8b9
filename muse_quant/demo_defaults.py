"""What the demo runs by default and where it writes: read by the demo and by its ``--help``."""

from __future__ import annotations

from pathlib import Path

DEFAULT_OUT = Path("muse-quant-demo")
#: The deployment precisions the demo runs, with real kernels (GGUF on llama.cpp's); GPTQ and
#: GGUF when gptqmodel and llama-cpp-python are installed. Then two deployments beyond
#: quantization (docs/deployments.md): Wanda pruning to 50%, and 50 steps of benign fine-tuning
#: on retain text.
DEFAULT_PRECISIONS = (
    "fp32", "int8", "nf4", "fp4", "gguf-q4_k_m", "gptq-w4g128", "wanda-50", "relearn-retain-k50"
)  # fmt: skip
#: On the real world (``--scale real``, SmolLM2-135M): the full precision and three 4-bit
#: deployments, bitsandbytes' two and llama.cpp's. A cell there costs minutes, not seconds, so
#: int8 and the deployments beyond quantization are left to ``--precisions``, and so is GPTQ:
#: its groups of 128 do not divide SmolLM2's width of 576 (``gptq-w4g64`` does), and its CPU
#: kernel took 42 s for one four-token answer there (docs/precisions.md), hours for a cell.
REAL_PRECISIONS = ("fp32", "nf4", "fp4", "gguf-q4_k_m")
CORPUS = "news"
#: The zoo runs audited with a full report: the same method, full fine-tuning and LoRA.
AUDITED = ("npo_gdr_full", "npo_gdr_lora")
RESULTS, BOARD, AUDITS = "results", "board", "audits"
