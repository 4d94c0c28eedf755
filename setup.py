"""Package discovery: the library `modan_pacs` plus the top-level `cli/` folder installed as
`modan_pacs.cli` (never as a top-level package named `cli`), and `configs/` as
`modan_pacs.configs` so the shipped YAML files are found after a non-editable install too. Metadata lives in pyproject.toml."""

from setuptools import find_packages, setup

library = find_packages(include=["modan_pacs", "modan_pacs.*"])
cli = ["modan_pacs." + name for name in find_packages(include=["cli", "cli.*"])]
setup(
    packages=library + cli + ["modan_pacs.configs"],
    package_dir={"modan_pacs.cli": "cli", "modan_pacs.configs": "configs"},
    package_data={"modan_pacs": ["py.typed"], "modan_pacs.configs": ["*.yaml"]},
)
