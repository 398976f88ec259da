"""Helpers of `python -m calql_vision.plot`: reading run directories, drawing the figures."""
