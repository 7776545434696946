"""Errors a user can fix, and the one clean stop every stage shares.

The CLI (`distillery.cli.main`) maps each to its exit code in one place: `UserError` prints
one line and exits 2; `BudgetStop` prints one line and exits 4.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a config, a data file, a flag. The message names the file, line or key."""

    exit_code = 2


class BudgetStop(Exception):
    """A teacher's `max_cost_usd` would be crossed by the next request: the run stops cleanly.

    Raised by `Teacher.complete` before it sends the request that would cross the cap, and
    re-raised by `run_job` only after every request in flight has finished and its journal
    is flushed, so a re-run with a higher cap continues where this one stopped. A stage may
    catch it to write what it has (rows, manifest), then re-raises it; the CLI prints the
    message as one line and exits with code 4.
    """

    exit_code = 4
    partial: object = None  # the work done before the stop (`run_job` puts its `JobResult`)
