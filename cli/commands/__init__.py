"""One module per command. Each module defines ``register(app: typer.Typer) -> None``.

Modules here must not import torch, monai or pydicom at import time: `modan-pacs --help`
builds every command's help from these modules. Import heavy libraries inside the command body.
"""
