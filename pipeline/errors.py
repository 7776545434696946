"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a config, a data file, a flag. The message names the file, line or key."""

    exit_code = 2
