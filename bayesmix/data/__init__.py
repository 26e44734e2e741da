"""Run tables and their sources: RunTable, readers, mixtures, constraints."""
