"""Decisions over posterior draws: objectives, optimisation, guarantees, scale shift."""
