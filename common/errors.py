"""Bad input from the user: every program turns a `UsageError` into a one-line `error:` and exit status 2.

Each program has its own subclass (`taco.errors.TacoError`, `dynamics.errors.ProbeError`,
`experiments.errors.EvalError`); the command-line layer (`common.cli`) raises the base class.
"""


class UsageError(Exception):
    """Bad input the user can fix: the message is one line that names the offending thing and the fix."""

    exit_code = 2
