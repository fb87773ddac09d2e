"""Scoring models: ranking metrics, exact top-k, trial selection, and Annoy fast search."""
