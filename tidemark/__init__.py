"""tidemark's shared kernel: the root error and the typed settings that every package reads.

It sits below ``features/``, ``monitoring/``, ``serving/`` and ``pipelines/``: each of them may
import it, and it imports none of them (an import-linter contract says so). Nothing here starts
anything or reads the environment at import time.
"""
