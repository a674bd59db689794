"""tidemark pipelines: data generation, feature builds, the CLI and the Airflow DAGs."""
