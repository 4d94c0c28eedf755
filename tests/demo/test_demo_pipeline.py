"""README's main command: the demo runs end to end and can be run twice without harm."""

from __future__ import annotations

import pandas as pd
import pytest

from modan_pacs.demo.pipeline import DemoSettings, run_demo


@pytest.mark.slow
def test_demo_runs_twice_and_resumes(tmp_path):
    settings = DemoSettings(
        n_patients=8, image_size=32, pretrain_epochs=1, pretrain_batch=16, downstream_images=40, bench_epochs=1
    )
    report = run_demo(tmp_path / "demo", settings=settings)
    tables = pd.read_csv(report / "tables.csv")
    assert set(tables["method"]) == {"modan-mulsupcon", "scratch"}
    assert set(tables["regime"]) == {"finetune", "linear"}
    assert (tmp_path / "demo" / "runs" / "modan" / "encoder.pt").is_file()
    first = (report / "tables.csv").read_text()
    # a second run resumes every stage and reproduces the same tables
    report_again = run_demo(tmp_path / "demo", settings=DemoSettings(**{**settings.__dict__, "stage_seconds": {}}))
    assert (report_again / "tables.csv").read_text() == first
