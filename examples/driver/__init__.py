"""A second example project, not about payments: ride-hailing trips.

A customer requests a trip; tidemark serves the assigned driver's hourly statistics and the
customer's daily profile as of the request time. Two models are trained on the same inputs:

* whether the requested trip is completed (binary, ``completed``), and
* how long the completed trip takes (regression, ``trip_minutes``, in minutes).

The layout follows the project that ``feast init -t spark`` creates (``driver`` and ``customer``
entities, the ``driver_hourly_stats`` and ``customer_daily_profile`` views, a feature service);
the data is generated locally and seeded by :mod:`examples.driver.datagen`.

    examples/driver/
        datagen.py        seeded Parquet tables under $TIDEMARK_HOME/driver_example/data
        features.py       the Feast objects, built for a given data folder
        training.py       scikit-learn entry points over a point-in-time training frame
        feature_repo/     feature_store.yaml and definitions.py for the ``feast`` CLI
"""
