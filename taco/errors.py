"""The one exception type the training CLI turns into a one-line error and exit code 2."""


class TacoError(ValueError):
    """Bad input to `taco.train`: the message names the offending thing and how to fix it."""
