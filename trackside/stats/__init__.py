"""Statistics read from daily rows (closed, rolled-up days) and raw events (the rest)."""
