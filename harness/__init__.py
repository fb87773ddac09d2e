"""Harness for tests, benchmarks and by-hand checks: starts local Airflow, Spark and database services.

Not part of the shipped package (``music_recsys``): production imports nothing from here.
"""
