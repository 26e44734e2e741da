"""Scaling up: the nested pipeline, backtests, aggregated losses."""
