"""`python -m dynamics.metrics`: print the table of registered metrics (the README's, generated)."""

from dynamics.metrics.registry import markdown_table

print(markdown_table(), end="")
