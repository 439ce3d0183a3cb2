"""Storing and reporting: the results store (`store`), onsets, seed groups, word-acquisition tables (`word_curves`), figures, report.md and the run palette."""
