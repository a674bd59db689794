"""Example projects built on tidemark's public contract."""
