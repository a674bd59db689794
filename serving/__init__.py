"""tidemark serving (model loading, champion-challenger routing)."""
