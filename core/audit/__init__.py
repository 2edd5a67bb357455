"""The data audit: mislabelled photos, near-duplicates, train/val leaks and outliers found on
a pretrained body's pooled features (``run.py``, ``findings.py``, ``crossval.py``), the
visitor's cleaned datasets that fix them without touching the source (``cleaned.py``),
and what a changed validation set means for comparing runs (``valsets.py``)."""
