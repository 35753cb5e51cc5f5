"""Experiments: sweeps that compose the worlds, models, training and theory layers, with their results
stores, tables and plots."""
