"""Data in: datasets from folders and zips (``datasets``, ``archive``), decoding photos
safely (``images``), the transforms of a weight version (``transforms``) and batches
from a decoded-image cache (``batches``)."""
