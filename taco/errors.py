"""Bad input to the training programs (`taco.train`, `taco.prepare`)."""

from common.errors import UsageError


class TacoError(UsageError, ValueError):
    """Bad input to `taco.train` / `taco.prepare`: the message names the offending thing and how to fix it."""
