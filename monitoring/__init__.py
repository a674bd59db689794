"""tidemark drift monitoring (reference profiles, drift statistics, reports)."""

# monitoring.mlflow_log imports MLflow only when called, so this import stays cheap. Binding the
# function here also keeps ``monitoring.mlflow_log`` the function: were the submodule imported
# later, the import system would set the package attribute to the module instead.
from monitoring.mlflow_log import mlflow_log

__all__ = ["mlflow_log"]
