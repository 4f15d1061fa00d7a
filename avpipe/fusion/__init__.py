"""Fusion trainer: labels, windows over the cache, models, losses/metrics, training, prediction."""
