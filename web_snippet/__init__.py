"""The web snippet, served by the sidecar as a file (issue 5)."""
