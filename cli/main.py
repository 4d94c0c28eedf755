"""Entry point of `modan-pacs`: a typer app whose commands live in ``cli/commands/``.

Commands are thin: parse, call one library function with keyword arguments, print. Library
exceptions (:class:`modan_pacs.errors.ModanPacsError`) become one red line and a non-zero exit code
here, at the edge, and nowhere else.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer
from rich.console import Console

from modan_pacs import __version__
from modan_pacs.errors import ModanPacsError

from . import commands

app = typer.Typer(
    name="modan-pacs",
    help="Turn a hospital PACS into pretraining signal (ModAn-MulSupCon).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        print(f"modan-pacs {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Turn a hospital PACS into pretraining signal (ModAn-MulSupCon)."""


for _info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
    importlib.import_module(f"{commands.__name__}.{_info.name}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; library errors become a one-line message and the error's exit code."""
    try:
        rv = app(args=argv, standalone_mode=False)
    except ModanPacsError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/] (re-run the same command to resume)")
        return 130
    except SystemExit as exc:  # typer.Exit / click usage errors
        return int(exc.code or 0)
    except Exception as exc:  # click usage errors in standalone_mode=False
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            err_console.print("[bold red]aborted[/]")
            return 1
        raise
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
