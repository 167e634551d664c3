"""The command group class of every face0 command: domain and usage errors become one red line on stderr."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 carries its own copy of click, whose exceptions are not click's
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer on plain click
    from click import exceptions as click_exc  # type: ignore[no-redef]

from face0cli.console import error
from face0cli.errors import Face0Error


class Face0Group(TyperGroup):
    """Turns domain errors, usage errors and file-system errors into one red line on stderr and a non-zero exit."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:  # type: ignore[override]
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[misc]
        except Face0Error as e:
            error(str(e))
            sys.exit(e.exit_code)
        except click_exc.NoArgsIsHelpError:
            sys.exit(0)  # typer has printed the help while raising this
        except click_exc.ClickException as e:
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            error(f"{e.format_message().replace('Value error, ', '')}{hint}")
            sys.exit(e.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            error("interrupted; nothing was left half-written.")
            sys.exit(130)
        except OSError as e:  # a folder that cannot be created, a full disk, no permission
            where = f" {e.filename}" if e.filename else ""
            error(f"cannot write{where}: {e.strerror or e}.")
            sys.exit(2)
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


class DefaultCommandGroup(Face0Group):
    """A group whose first sub-command is also its default: `face0 eval SPEC` reads as `face0 eval run SPEC`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-") and self.commands:
            args = [next(iter(self.commands)), *args]
        return super().parse_args(ctx, args)
