"""Plausible's Stats API v2 over fact rows: parse (`schema`), SQL (`sql`), answer (`engine`), spellings (`labels`)."""
