"""The one exception the app's loaders raise."""

from __future__ import annotations


class DataError(Exception):
    """A problem with a store or run directory that the page states as a message."""
