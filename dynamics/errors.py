"""The one exception type of the probe: bad input that the user can fix.

`dynamics.probe.main()` turns it into a one-line message on stderr and exit status 2. The message names the
offending path and says how to fix it.
"""

from __future__ import annotations

from common.errors import UsageError


class ProbeError(UsageError):
    """Bad input (missing or corrupt files, incompatible runs, too little text); the message is one line."""



class StoreError(UsageError):
    """A results store that cannot be written where asked (a file in the way, a database that is not ours)."""
