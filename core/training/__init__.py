"""Training: the trainer and its events (``trainer``), the frozen fast path and its shared
feature cache (``features``, ``frozen_path``, ``feature_cache``), and one experiment end to
end (``experiment``)."""
