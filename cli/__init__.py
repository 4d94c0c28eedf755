"""The `modan-pacs` command-line application (installed as ``modan_pacs.cli``)."""
