"""Thin adapters: each one does I/O for the pure core and never prints."""
