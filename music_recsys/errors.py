"""Errors that several layers raise, defined at the bottom so none of them imports another's."""

from __future__ import annotations


class InputError(ValueError):
    """The input or params make the work fail; retrying with the same input cannot help."""
