"""User-facing errors.

Everything that is the user's input being wrong (a missing folder, an unsafe archive, a
weights file that does not fit) raises a subclass of ``TransferLabError``.  The CLI turns
these into one line on stderr and exit status 2; the dashboard shows them with
``st.error``.  Anything else escaping is a bug and keeps its traceback.

Each kind of file a user hands us has one guarded entry (weights: ``read_state_dict``;
image: ``load_rgb``; archive: ``extract_zip``; run folder: ``load_run``/``Predictor``).
Whatever the library underneath raises on a hostile file comes out of that entry as
one of these, naming the user's file by its name (never a server-side path) and saying
why.  Only refusals this project decides on (code in a pickle, a zip bomb, NaN weights)
say "refused"; the rest say what is wrong with the file.
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
    """A run folder is missing, incomplete or damaged."""


class ImageReadError(TransferLabError):
    """One image could not be used.

    Unlike the other errors, ``str()`` is the reason alone: every place that shows it
    already puts the file beside it (the skipped-files table, predict's JSON line, the
    Predict page's "**name**: cannot be classified (reason)").  ``name`` is the file's
    name, for callers that show the error on its own (the CLI).
    """

    def __init__(self, reason: str, name: str = ""):
        super().__init__(reason, name)  # both in args, so the error pickles and unpickles whole
        self.reason, self.name = reason, name

    def __str__(self) -> str:
        return self.reason
