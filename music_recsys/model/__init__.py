"""The model: Spark ALS and the numpy fold-in of a new listener against fixed item factors."""
