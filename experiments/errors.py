"""The one exception type of the downstream evaluation: bad input that the user can fix.

`experiments.evaluate.main()` turns it into a one-line `error:` on stderr and exit status 2. The message names
the offending path (or flag) and says how to fix it.
"""

from __future__ import annotations

from common.errors import UsageError


class EvalError(UsageError):
    """Bad input (missing task data, malformed TSV, unknown task, a folder without a model); one line."""

