"""Trackside's ARQ worker: persists event batches, rolls up closed days, prunes (issue 3)."""
