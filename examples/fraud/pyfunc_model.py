"""The file MLflow logs as the fraud model's code ("models from code"): loading the model runs
this file instead of unpickling an object, so a model artifact carries no pickled code."""

import mlflow.models

from examples.fraud.pyfunc import FraudPyfunc

mlflow.models.set_model(FraudPyfunc())
