"""music-recsys: implicit-feedback music recommendation with Spark ALS, evaluated and served with Annoy.

The package holds everything shared by the DAG, the Spark jobs and the tests: schemas, run
configuration, the data generator, ranking metrics, top-k search, and the results store.
"""
