"""tidemark drift monitoring (reference profiles, drift statistics, reports)."""
