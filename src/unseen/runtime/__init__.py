"""Runners: they move data and call the pure algorithms. Today: the in-process simulator."""
