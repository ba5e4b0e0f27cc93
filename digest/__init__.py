"""digest: build a publication's weekly email digest from its feeds and send it."""

__version__ = "0.1.0"
