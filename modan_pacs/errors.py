"""Exception types of the library. The CLI maps them to exit codes and one-line messages."""


class ModanPacsError(Exception):
    """Base class: a problem the user can fix (bad input, missing data, bad config).

    The message is shown to the user as one line, so it must name the file or field at fault.
    """

    exit_code = 2


class InputError(ModanPacsError):
    """A path, file or value given by the user is missing or malformed."""


class ConfigError(ModanPacsError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value)."""


class DataNotFoundError(ModanPacsError):
    """A dataset is not where it was expected; the message says where to get it and its layout."""


class PacsError(ModanPacsError):
    """A PACS could not be reached, refused us, or failed an operation."""

    exit_code = 3
