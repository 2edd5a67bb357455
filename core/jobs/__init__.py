"""The server-wide training queue (``queue``), what each job shows while it waits and runs
(``progress``, ``estimates``) and the database that lets it survive a restart (``db``).

Orchestration sits above training (it runs experiments); run storage (``core/runs``)
sits below it.  Nothing under ``core/training`` or ``core/runs`` imports from here."""
