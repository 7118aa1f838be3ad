"""Exceptions that say what is wrong, with which file, and what to do about it.

Each subclasses the built-in exception a caller would naturally catch (``FileNotFoundError``,
``ValueError``, ...), so code that does not know eoseg still handles them sensibly, and every one also
subclasses :class:`EosegError`, which the CLI turns into a one-line message and a non-zero exit code.
"""

from __future__ import annotations


class EosegError(Exception):
    """Base of every error eoseg raises on purpose (bad input, bad configuration)."""


class SceneNotFoundError(EosegError, FileNotFoundError):
    """The input scene (or store, or model) does not exist."""


class CorruptSceneError(EosegError, ValueError):
    """The file exists but GDAL cannot read it as a raster (corrupt, truncated, not a raster)."""


class MissingCRSError(EosegError, ValueError):
    """The raster has no coordinate reference system and ungeoreferenced input was not allowed."""


class EmptySceneError(EosegError, ValueError):
    """The raster has no pixels, or no valid (non-nodata) pixels."""


class UnsupportedDtypeError(EosegError, TypeError):
    """The raster's data type cannot be processed (e.g. complex values)."""


class BandCountError(EosegError, ValueError):
    """The number of bands does not match what a model or an option expects."""


class OutputExistsError(EosegError, FileExistsError):
    """The output already exists and ``overwrite`` was not given."""


class OutputLocationError(EosegError, PermissionError):
    """The output's folder is not a writable directory and cannot be created."""


class IncompleteStoreError(EosegError, ValueError):
    """A Zarr store exists but was not finished by eoseg (interrupted write) or is not an eoseg store."""


class ConfigurationError(EosegError, ValueError):
    """An option or configuration value is invalid."""


class CorruptStoreError(IncompleteStoreError):
    """A chunk of a finished store cannot be read back (damaged on disk or in the bucket)."""


class CorruptCheckpointError(EosegError, ValueError):
    """A model checkpoint exists but cannot be read as one (truncated, another file format, bad contents)."""


class TileGridMismatchError(EosegError, ValueError):
    """The input tiles of one scene are not on one pixel grid (CRS, resolution, lattice, bands differ)."""


def reason(error: BaseException) -> str:
    """The most specific message of an exception chain, for ``error: FILE: what failed (reason)`` lines.

    rasterio reports a failed read as "Read failed. See previous exception for details." and chains
    GDAL's own message (e.g. ``band 1: IReadBlock failed at X offset 0, Y offset 0``) as the cause; that
    message is the one a user can act on.
    """
    message, cause = str(error), error.__cause__ or error.__context__
    while cause is not None and "previous exception" in message:
        message, cause = str(cause), cause.__cause__ or cause.__context__
    return message
