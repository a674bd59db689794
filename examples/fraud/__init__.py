"""The bundled example project: card-fraud detection on payments (``make demo``).

A payment is scored as it is authorised, from the card holder's recent spend, profile and the
merchant's daily statistics; its fraud label arrives days later (a chargeback). Written against
tidemark's public contract like any team's project: the platform imports none of it, and reaches
it only through the entry points that ``feature_repo/tidemark.yaml`` names.

    examples/fraud/
        feature_repo/     feature_store.yaml, definitions.py (``feast`` CLI), tidemark.yaml
        model.py          the PyTorch model (embeddings + MLP) and its spec
        pyfunc.py         its MLflow pyfunc view (pyfunc_model.py: the "model from code" file)
        training.py       frame preparation and fitting (epochs, early stopping)
        training_data.py  labelled transactions as entity rows
        train_job.py      the model's ``train_job``: train, log the MLflow run, register
"""
