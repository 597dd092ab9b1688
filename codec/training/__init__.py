"""Training helpers for codec.train (objective, schedule, state, distributed)."""
