"""User-facing errors.

Everything that is the user's input being wrong (a missing folder, an unsafe archive, a
weights file that does not fit) raises a subclass of ``TransferLabError``.  The CLI turns
these into one line on stderr and exit status 2; the dashboard shows them with
``st.error``.  Anything else escaping is a bug and keeps its traceback.
"""


class TransferLabError(Exception):
    """Bad input, explained in one sentence that names the input."""


class DatasetError(TransferLabError):
    """The dataset folder or archive cannot be used."""


class ArchiveError(DatasetError):
    """A zip archive is damaged or unsafe; nothing was extracted."""


class WeightsError(TransferLabError):
    """A weights file is missing, refused, or does not fit the model."""


class UnknownArchitectureError(TransferLabError):
    """The architecture name is not a torchvision classifier."""


class RunError(TransferLabError):
    """A run folder is missing or incomplete."""
