"""Cluster metadata: the image (plain data), the records that change it, and the store."""
