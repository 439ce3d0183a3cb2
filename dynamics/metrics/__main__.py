"""`python -m dynamics.metrics`: print the table of registered metrics (docs/metrics.md's, generated)."""

from dynamics.metrics.registry import markdown_table

print(markdown_table(), end="")
