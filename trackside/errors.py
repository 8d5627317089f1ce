"""Trackside's own exceptions.

TracksideError
  +-- ConfigError    a setting is missing or wrong; the message names it (start-up stops)
"""

from __future__ import annotations


class TracksideError(Exception):
    pass


class ConfigError(TracksideError):
    pass
