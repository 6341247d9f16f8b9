"""The ``muse`` lm-eval model: its arguments read once into a request, then the runtime its
precision runs on builds the model.

lm-eval builds every model through ``create_from_arg_string`` / ``create_from_arg_obj``; here
they read a :class:`~model_wrappers.request.ModelRequest` and hand it to the runtime the
precision's family declares: :data:`RUNTIMES` lists them (torch: ``muse_lm``, llama.cpp:
``llamacpp_lm``), so neither runtime knows of the other. ``muse-quant eval`` reads the request
before lm-eval starts (to refuse bad input before lm-eval builds its tasks) and hands it over
with :func:`prepared`, since lm-eval passes a model only its arguments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from harness_ext.errors import one_line_when_uncaught
from model_wrappers.llamacpp_lm import LlamaCppLM
from model_wrappers.model_arguments import parse_model_args
from model_wrappers.muse_lm import MuseLM
from model_wrappers.request import ModelRequest, read_request

one_line_when_uncaught()  # plain lm_eval: our input errors as one line, exit 2

#: The runtime of each precision family's ``runtime`` name.
RUNTIMES: dict[str, type[LM]] = {"torch": MuseLM, "llama.cpp": LlamaCppLM}


def muse_model(args: Mapping[str, Any], additional: Mapping[str, Any] | None = None) -> LM:
    """The model for ``args`` (lm-eval's ``batch_size``/``device`` in ``additional``; None
    values are lm-eval's "not given")."""
    merged = {**args, **{k: v for k, v in (additional or {}).items() if v is not None}}
    ready = _PREPARED.get()
    request = ready if ready is not None and ready.args == merged else read_request(merged)
    return build(request)


def build(request: ModelRequest) -> LM:
    """The model of a request, on its runtime."""
    return RUNTIMES[request.runtime](request)


@register_model("muse")
class MuseModel(LM):
    """The name lm-eval knows (``--model muse``); lm-eval builds models through the two class
    methods, which return the runtime's model."""

    @classmethod
    def create_from_arg_obj(
        cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None
    ) -> Any:
        return muse_model(arg_dict, additional_config)

    @classmethod
    def create_from_arg_string(
        cls, arg_string: str, additional_config: dict[str, Any] | None = None
    ) -> Any:
        return muse_model(parse_model_args([arg_string]), additional_config)


#: The request ``muse-quant eval`` read, for lm-eval's call to build the model.
_PREPARED: ContextVar[ModelRequest | None] = ContextVar("muse_prepared_request", default=None)


@contextlib.contextmanager
def prepared(request: ModelRequest) -> Iterator[None]:
    """Within this block, the model lm-eval asks for with ``request.args`` is built from
    ``request`` (read already) instead of reading the arguments again."""
    token = _PREPARED.set(request)
    try:
        yield
    finally:
        _PREPARED.reset(token)
