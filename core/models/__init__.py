"""Models: the zoo and its weights (``zoo``, ``checkpoint``, ``download``), the
per-family surgery table (``families``, ``surgery``), BatchNorm folding (``inference``)."""
