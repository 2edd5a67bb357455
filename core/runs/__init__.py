"""Runs on disk: saved runs (``store``), who may see and change them (``access``) and
portable bundles (``bundle``).  Persistence only: the queue that makes runs is ``core/jobs``."""
