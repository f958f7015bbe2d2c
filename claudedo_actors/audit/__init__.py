"""Audit: verify the log and what it points to, export it for offline verification."""
