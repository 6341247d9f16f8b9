"""The weights a deployment's precision starts from: a checkpoint's float32 weights with the
deployment steps applied (pruned, relearned), held once and handed to the precision's backend.

A :class:`DeployedSource` is a :class:`~model_wrappers.precisions.Source` like a checkpoint: the
backends (bitsandbytes loading with a quantization config, GPTQ and llama.cpp reading files) build
from it unchanged, and its ``digest`` names the deployed weights, so a quantized checkpoint cached
for them is never mistaken for the undeployed one's.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from model_wrappers.checkpoints import from_held, written_folder
from model_wrappers.precisions.base import Precision, Source, StepContext


class DeployedSource:
    """``inner``'s weights after ``precision``'s deployment steps, in their order (each step's
    inputs checked here, before any weight is read)."""

    def __init__(self, inner: Source, precision: Precision) -> None:
        for step in precision.deployments:
            if step.check_folder is not None:
                step.check_folder(step, inner.folder)
        self.inner = inner
        self.precision = precision
        self.folder: Path = inner.folder
        self.device: str = inner.device
        self.trust_remote_code: bool = inner.trust_remote_code
        self._model: Any = None
        #: What each step did (``apply``'s records), once the weights are deployed.
        self.records: list[dict[str, Any]] = []

    @property
    def digest(self) -> str:
        return _chain(self.inner.digest, self.precision, len(self.precision.deployments))

    def deployed(self) -> Any:
        """The deployed float32 model, computed once (every step changes it in place)."""
        if self._model is None:
            self.records = []
            # A copy: a checkpoint held for reuse (``reusing_checkpoints``) gives models that
            # share its tensors, which the steps would change for every later precision.
            model = copy.deepcopy(self.inner.load(dtype=torch.float32))
            for done, step in enumerate(self.precision.deployments):
                context = StepContext(
                    self.folder,
                    _chain(self.inner.digest, self.precision, done),
                    self.precision.calibration,
                    self.device,
                )
                self.records.append({"name": step.name, **step.apply(model, step, context)})
            model.eval()
            self._model = model
        return self._model

    def load(self, **from_pretrained: Any) -> Any:
        return from_held(
            self.deployed(),
            trust_remote_code=self.trust_remote_code,
            device_map={"": self.device},
            **from_pretrained,
        )

    def finish(self) -> list[dict[str, Any]]:
        """What each step did, and the deployed float32 copy released (the backend has built
        from it). A backend that found its quantized file cached never asked for the deployed
        weights: the steps run here then, so that the provenance always says what they did."""
        if not self.records:
            self.deployed()
        self._model = None
        return self.records

    @contextlib.contextmanager
    def weights_folder(self) -> Iterator[str]:
        with written_folder(self.deployed(), self.folder, "deployed") as tmp:
            yield tmp


def _chain(digest: str, precision: Precision, steps: int) -> str:
    """The identity of ``digest``'s weights after the first ``steps`` deployment steps (with the
    calibration texts, which Wanda reads)."""
    if steps == 0:
        return digest
    parts = {
        "weights": digest,
        "steps": [step.describe() for step in precision.deployments[:steps]],
        "calibration": precision.calibration.sha256 if precision.calibration else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
