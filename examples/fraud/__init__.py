"""The bundled example project: card-fraud detection on payments (``make demo``).

A payment is scored as it is authorised, from the card holder's recent spend, profile and the
merchant's daily statistics; its fraud label arrives days later (a chargeback). Written against
tidemark's public contract like any team's project: the platform imports none of it, and reaches
it only through the entry points that ``feature_repo/tidemark.yaml`` names.

    examples/fraud/
        feature_repo/     feature_store.yaml, definitions.py (``feast`` CLI), tidemark.yaml
        datagen/          seeded synthetic payments, labels, profiles, merchants (scenarios of drift)
        feature_views.py  entities, Spark sources and feature views
        feature_jobs.py   the Spark build of the offline tables (customer_/merchant_features.py),
                          checked first (data_checks.py); ``feature_jobs.build``
        online_check.py   ``feature_jobs.sample_entities``: entities of the online/offline check
        model.py          the PyTorch model (embeddings + MLP) and its spec
        pyfunc.py         its MLflow pyfunc view (pyfunc_model.py: the "model from code" file)
        training.py       frame preparation and fitting (epochs, early stopping)
        training_data.py  labelled transactions as entity rows
        train_job.py      the model's ``train_job``: train, log the MLflow run, register
        replay.py         payments posted to a running server (the demo's traffic)
        demo.py           the whole loop (``tidemark demo``, ``make demo``)
        commands.py       ``tidemark datagen`` and ``tidemark demo``: the project's commands
"""
