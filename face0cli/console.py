"""The one rich Console (stdout for results, stderr for messages), progress bars and error display."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console()
err_console = Console(stderr=True)


def progress(*, rate_unit: str | None = None, transient: bool = False) -> Progress:
    """A progress bar on stderr, so stdout stays clean for --json. Disabled when stderr is not a terminal
    unless FACE0_PROGRESS=1 (rich prints nothing then anyway)."""
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
    return Progress(*columns, console=err_console, transient=transient)


def error(message: str) -> None:
    """One red line on stderr."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def info(message: str) -> None:
    err_console.print(message, highlight=False, soft_wrap=True)


def is_interactive() -> bool:
    return sys.stderr.isatty()
