"""What a benchmark tells its user: a csv dataset's own name, the trainings planned, one line per
fold off a terminal."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from modan_pacs.cli.main import main
from PIL import Image


def make_csv_dataset(root: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        image = rng.integers(0, 120, (20, 20), dtype=np.uint8)
        image[6:14, 6:14] += np.uint8(100 * (i % 2))
        (root / "img").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "img" / f"{i}.png")
        rows.append({"path": f"img/{i}.png", "label": i % 2})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


def test_csv_name_in_folders_and_tables_and_line_progress(tmp_path, capsys):
    csv = make_csv_dataset(tmp_path / "data")
    args = [
        "benchmark",
        "--dataset",
        "csv",
        "--data-dir",
        str(csv),
        "--init",
        "scratch",
        "--out",
        str(tmp_path / "run"),
        "--repeats",
        "1",
        "--folds",
        "2",
        "--regime",
        "linear",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--image-size",
        "16",
        "--scratch-stem",
        "authors",
        "--device",
        "cpu",
    ]
    assert main([*args, "--name", "knee-mri"]) == 0
    out = capsys.readouterr().out
    assert "2 trainings planned (1 init(s) x 1 regime(s) x 1 repeat(s) x 2 folds), 2 to run" in out
    lines = [line for line in out.splitlines() if re.match(r"^\[\d/2\] knee-mri linear scratch repeat 1 fold \d", line)]
    assert len(lines) == 2 and all(", ETA " in line for line in lines)  # stdout is not a terminal here
    assert (tmp_path / "run" / "knee-mri" / "linear" / "scratch" / "repeat_01" / "fold_2.csv").is_file()
    assert set(pd.read_csv(tmp_path / "run" / "report" / "tables.csv")["dataset"]) == {"knee-mri"}

    assert main([*args, "--name", "bad/name"]) == 2
    assert "--name 'bad/name'" in capsys.readouterr().err
