"""What outlives a run: the run layout, the results store, model bundles, the registry, retention."""
