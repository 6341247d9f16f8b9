"""lm-eval's log about our tasks: the notes it logs for every task that say nothing to our users.

lm-eval warns, for every task whose documents come from a ``custom_dataset`` function, that
custom kwargs can be passed with ``--metadata``: for our tasks that is how ``muse_data`` is
documented to be given, so every eval of a corpus printed it four times. This module drops that
warning for ``muse_*`` tasks only, with a filter on lm-eval's task logger (found by name; the
ground imports no lm-eval); every other record passes.
"""

from __future__ import annotations

import logging

#: lm-eval's logger of its task class (``lm_eval.api.task``), which logs the warning.
LM_EVAL_TASK_LOGGER = "lm_eval.api.task"
#: The warning, after the task name that starts it.
CUSTOM_KWARGS_NOTE = ": Custom kwargs can be passed to `--metadata`"


class DocumentedMetadataNote(logging.Filter):
    """Drops lm-eval's custom-kwargs warning about a ``muse_*`` task; passes every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("muse_") and CUSTOM_KWARGS_NOTE in message)


def drop_documented_metadata_note() -> None:
    """Put the filter on lm-eval's task logger (once, however often it is called)."""
    logger = logging.getLogger(LM_EVAL_TASK_LOGGER)
    if not any(isinstance(f, DocumentedMetadataNote) for f in logger.filters):
        logger.addFilter(DocumentedMetadataNote())
