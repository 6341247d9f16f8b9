"""LoRA adapter folders: found, checked against the base they were trained on, attached.

An :class:`Adapter` is opened from a peft folder (safetensors only unless ``allow_pickle``),
checked against the base :class:`~model_wrappers.checkpoints.Checkpoint` that ``muse-quant
unlearn`` recorded beside it, and attached unmerged or merged into the float32 base.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import safe_open
from torch import nn

from harness_ext.errors import MuseQuantError, first_line
from harness_ext.files import file_hashes
from model_wrappers.checkpoints import Checkpoint, resolve_folder, weight_files

#: What ``muse-quant unlearn`` writes beside an adapter: the run, with its base's weight hashes.
RECORDED_BASE = "unlearn.json"
ADAPTER_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.\w+)?\.weight$"
)


@dataclass(frozen=True)
class Adapter:
    """A peft adapter folder, its checked files and their hashes."""

    folder: Path
    files: dict[str, str]
    weights: tuple[Path, ...]

    @classmethod
    def open(cls, name: str, allow_pickle: bool) -> Adapter:
        folder = resolve_folder(name, allow_pickle, "adapter")
        config = folder / "adapter_config.json"
        if not config.is_file():
            raise MuseQuantError(f"adapter={name}: no adapter_config.json in {folder}")
        try:
            parsed = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
            raise MuseQuantError(
                f"adapter={name}: {config} is not valid JSON ({first_line(e)}); re-save the "
                "adapter (peft's save_pretrained) or restore the file"
            ) from None
        if not isinstance(parsed, dict):
            raise MuseQuantError(
                f"adapter={name}: {config} holds a JSON {type(parsed).__name__}, not peft's "
                "config object; re-save the adapter"
            )
        weights = weight_files(folder, "adapter_model", allow_pickle, f"adapter={name}")
        return cls(folder, file_hashes(folder, [config, *weights]), tuple(weights))

    def check_base(self, base: Checkpoint, allow_other: bool) -> str:
        """Refuse a base other than the one this adapter was trained on; return how the base
        was checked (recorded in the provenance).

        Exact when the folder holds muse-quant's ``unlearn.json`` (the base's weight hashes);
        else by the base peft recorded in ``adapter_config.json`` (a folder or a hub id).
        ``allow_other`` (``allow_other_base=true``) runs a mismatch anyway and says so.
        """
        recorded = self._recorded_base()
        if recorded is None:
            return "not checked: the adapter records no base"
        kind, value = recorded
        if kind == "sha256":
            given = {k: v for k, v in base.files.items() if k.endswith(".safetensors")}
            same, named = given == value, f"weights {self.folder / RECORDED_BASE} records"
        else:
            local = Path(value).expanduser()
            same = value == base.label or (local.is_dir() and local.resolve() == base.folder)
            named = f"base_model_name_or_path {value}"
        if same:
            return f"matches the {kind} the adapter records"
        if allow_other:
            return f"OVERRIDDEN (allow_other_base=true): the adapter records {named}"
        raise MuseQuantError(
            f"adapter {self.folder} was trained on another base than pretrained={base.label} "
            f"(its {named}); pass that base, or allow_other_base=true to run it anyway"
        )

    def _recorded_base(self) -> tuple[str, Any] | None:
        """("sha256", the base's weight hashes) or ("name", peft's base name), or None."""
        try:
            run = json.loads((self.folder / RECORDED_BASE).read_text(encoding="utf-8"))
            hashes = run["target"]["sha256"]
            if isinstance(hashes, dict) and hashes:
                return "sha256", hashes
        except (OSError, ValueError, KeyError, TypeError):
            pass
        try:
            config = json.loads((self.folder / "adapter_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        name = config.get("base_model_name_or_path") if isinstance(config, dict) else None
        return ("name", name) if isinstance(name, str) and name else None

    def check_fits(self, model: nn.Module, base: str) -> None:
        """Every LoRA matrix names a module of ``model`` with matching in/out widths."""
        if self.weights[0].suffix != ".safetensors":
            return  # pickled adapters: peft's own loading checks them
        for path in self.weights:
            with safe_open(str(path), framework="pt") as f:
                shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
            for key, shape in shapes.items():
                match = ADAPTER_KEY.match(key)
                if match is None:
                    continue
                name = match["module"]
                try:
                    module = model.get_submodule(name)
                except AttributeError:
                    raise MuseQuantError(
                        f"adapter {self.folder} does not fit {base}: it adapts {name}, which the "
                        "model does not have (wrong base model?)"
                    ) from None
                width = getattr(
                    module, "in_features" if match["ab"] == "A" else "out_features", None
                )
                wanted = shape[1] if match["ab"] == "A" else shape[0]
                if width is not None and width != wanted:
                    side = "input" if match["ab"] == "A" else "output"
                    raise MuseQuantError(
                        f"adapter {self.folder} does not fit {base}: {name} has {side} width "
                        f"{width}, the adapter's lora_{match['ab']} expects {wanted} "
                        "(wrong base model?)"
                    )

    def attach(self, model: nn.Module, base: str) -> Any:
        """``model`` with this adapter loaded unmerged (a ``PeftModelForCausalLM``)."""
        from peft import PeftModelForCausalLM  # peft (and bitsandbytes with it) loads slowly

        self.check_fits(model, base)
        try:
            return PeftModelForCausalLM.from_pretrained(model, str(self.folder), is_trainable=False)
        except (ValueError, RuntimeError, KeyError, OSError) as e:
            raise MuseQuantError(
                f"adapter {self.folder} does not fit {base}: {first_line(e)}"
            ) from None


