"""Runs: saved runs on disk (``store``), the server-wide training queue and its progress and
time estimates (``jobs``, ``jobs_progress``, ``estimates``)."""
