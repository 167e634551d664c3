"""The one rich Console (stdout for results, stderr for messages), progress bars and error display."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(markup=False)
"""Results on stdout, plain text: a path or a name with brackets in it (shots[1]/, [draft]) prints as it is, not as
rich markup; what is styled is a rich Text (or a Table of them)."""
err_console = Console(stderr=True)


def progress(*, rate_unit: str | None = None, transient: bool = False) -> Progress:
    """A progress bar on stderr, so stdout stays clean for --json. Off when stderr is not a terminal (logs,
    pipes, tests) unless FACE0_PROGRESS=1; FACE0_PROGRESS=0 turns it off everywhere."""
    columns = [
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    if rate_unit:
        columns.append(TextColumn("{task.fields[rate]}"))
    forced = os.environ.get("FACE0_PROGRESS")
    enabled = err_console.is_terminal if forced is None else forced not in ("0", "", "false", "no")
    return Progress(*columns, console=err_console, transient=transient, disable=not enabled)


def error(message: str) -> None:
    """One red line on stderr. The message is plain text: brackets in it (a path, a list, an extra's name) show as
    they are, not as rich markup."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """One yellow line on stderr; plain text, as error's."""
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def info(message: str) -> None:
    err_console.print(message, highlight=False, soft_wrap=True)


def is_interactive() -> bool:
    return sys.stderr.isatty()


def quiet_model_loading() -> None:
    """Silence diffusers' and transformers' own loading bars and chatter: face0 shows its own progress."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
