"""Checks of the production path (compose, image) and of observability/ without a Docker engine."""
