"""Shipped YAML configs (installed as ``modan_pacs.configs``); see :func:`modan_pacs.paths.config_path`."""
