"""The Airflow side: run config and params, the plan, the DAG's tasks, the approval of a promotion, the Spark
job operator and runner, the report."""
