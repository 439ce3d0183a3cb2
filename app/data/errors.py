"""The one exception the app's loaders raise, and the wrapper that makes every loader raise only it."""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# What reading damaged data raises inside pandas and numpy: a column of text where numbers belong, an array
# without the keys or the shape its kind has, a truncated file.
DAMAGE = (KeyError, ValueError, TypeError, IndexError, AttributeError, OSError, EOFError, zipfile.BadZipFile)


class DataError(Exception):
    """A problem with a store or run directory that the page states as a message."""


def named(what: str) -> Callable[[F], F]:
    """A loader whose first argument is the store's (or run directory's) path raises only `DataError`: any
    failure on damaged data becomes one naming that path and `what` could not be read, so that the page states it
    beside what it could draw instead of a bare `KeyError` naming nothing."""

    def wrap(load: F) -> F:
        @functools.wraps(load)
        def loader(path: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return load(path, *args, **kwargs)
            except DataError:
                raise
            except DAMAGE as exc:
                raise DataError(f"{path}: {what} cannot be read ({type(exc).__name__}: {exc}); the file holds "
                                "something this app does not expect") from exc

        return loader  # type: ignore[return-value]

    return wrap
