"""Entry point of `modan-pacs`: a typer app whose commands live in ``cli/commands/``.

Commands are thin: parse, call one library function with keyword arguments, print. Library
exceptions (:class:`modan_pacs.errors.ModanPacsError`) become one red line and a non-zero exit code
here, at the edge, and nowhere else.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from pathlib import Path

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


def _quiet_pydicom() -> None:
    """Keep pydicom's own warnings and log records off the terminal. They quote raw header bytes of a
    user's files (identifying values included) and, for a failed decoder plugin, a traceback; what
    they say about a file is recorded by the command itself (``errors.parquet`` with a reason)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    logging.getLogger("pydicom").propagate = False  # pydicom's own NullHandler stays


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. Nothing reaches the terminal as a traceback:

    - a library error (:class:`ModanPacsError`): one red line, the error's exit code;
    - a usage error (unknown option, a value of the wrong type, a missing argument; typer's
      ``UsageError`` family): one line with typer's message and where to find help, exit 2;
    - anything unexpected: one line naming the exception and the log file that holds its traceback
      (:func:`crash_log_dir`), exit 1.
    """
    _quiet_pydicom()
    try:
        rv = app(args=argv, standalone_mode=False)
    except ModanPacsError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/] (re-run the same command to resume)")
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        err_console.print("[bold red]aborted[/]")
        return 1
    except _TYPER_ERRORS as exc:  # usage errors (exit 2) and typer's other user-facing errors
        return _show_typer_error(exc)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        log = _write_crash_log(argv)
        what = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        err_console.print(
            f"[bold red]error:[/] unexpected {what} (traceback in {log})", highlight=False, soft_wrap=True
        )
        return 1
    return rv if isinstance(rv, int) else 0


def _typer_error_types() -> tuple[type[BaseException], ...]:
    """typer's base class of the errors it shows to users (its vendored click since typer 0.19;
    click's own before)."""
    base = getattr(typer, "TyperException", None)
    if base is None:  # a typer that still depends on click
        import click

        base = click.ClickException
    return (base,)


_TYPER_ERRORS = _typer_error_types()


def _show_typer_error(exc: BaseException) -> int:
    """typer's message on one line; returns typer's exit code (2 for a usage error)."""
    code = int(getattr(exc, "exit_code", 2))
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError":  # `modan-pacs` alone: typer has printed the help
        return code  # (matched by name, as typer's own rich_utils does: the class is not public)
    message = " ".join(str(exc.format_message()).split())
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    err_console.print(f"[bold red]error:[/] {message}{where}", highlight=False, soft_wrap=True, markup=True)
    return code


def crash_log_dir() -> Path:
    """Where tracebacks of unexpected errors go: ``$MODAN_PACS_LOG_DIR``, else
    ``$XDG_CACHE_HOME/modan-pacs/logs`` (``~/.cache/modan-pacs/logs``)."""
    env = os.environ.get("MODAN_PACS_LOG_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "modan-pacs" / "logs"


def _write_crash_log(argv: list[str] | None) -> Path:
    """Write the current exception's traceback to a new file in :func:`crash_log_dir` (or the
    temporary folder if that cannot be written); return its path."""
    import tempfile
    import time
    import traceback

    text = (
        f"modan-pacs {__version__}, {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n"
        f"argv: {sys.argv[:1] + list(sys.argv[1:] if argv is None else argv)}\n\n{traceback.format_exc()}"
    )
    name = f"crash-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    for folder in (crash_log_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text)
            return path
        except OSError:
            continue
    return Path("(no writable log folder)")


if __name__ == "__main__":
    sys.exit(main())
