"""Project hooks."""

from __future__ import annotations

import logging

from kedro.framework.hooks import hook_impl

from multitask_cnn.config import validate_parameters

logger = logging.getLogger(__name__)


class ValidateParametersHook:
    """Check the whole parameter tree once, before any node (or MLflow run) starts.

    A bad task kind, an unknown key or a value of the wrong type stops the run here
    with a message naming the key and its file, instead of minutes later.
    """

    @hook_impl
    def after_context_created(self, context) -> None:
        validate_parameters(context.params)
        logger.info("Parameters validated (env %r)", context.env)
