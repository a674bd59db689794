"""tidemark feature store: Spark feature jobs, the Feast offline store plugin and the notebook SDK.

Nothing here starts Spark or reads configuration at import time.
"""
