"""The proxy study end to end at its reduced (CI) budget, on the real shared/data images."""

from __future__ import annotations

import pandas as pd
import pytest

from modan_pacs.demo.proxy import ProxySettings, anatomy_agreement, run_proxy_study, wrap_pool_as_export


def test_anatomy_agreement_matches_relative_truth_paths_to_absolute_index_paths(tmp_path, monkeypatch):
    """The proxy study's "anatomy recovered for X% of the pool" with a relative --out (was 0.0%)."""
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b", "c"):
        (tmp_path / "out" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "out" / name).touch()
    truth = pd.DataFrame({"path": ["out/a", "out/b", "out/c"], "modality": "MR", "anatomy": ["knee", "brain", "knee"]})
    index = pd.DataFrame(
        {
            "path": [str(tmp_path / "out" / n) for n in ("c", "a", "b")],
            "modality_label": ["MR", "MR", None],
            "anatomy_label": ["knee", "knee", "brain"],
        }
    )
    assert anatomy_agreement(truth, index) == pytest.approx(2 / 3)  # b: no modality label
    index.loc[2, "modality_label"] = "MR"
    assert anatomy_agreement(truth, index) == 1.0


@pytest.mark.data
def test_wrapped_pool_keeps_labels_through_messy_headers(shared_data, tmp_path, monkeypatch):
    """Every pool image, written with messy headers (into a relative folder), is indexed with its
    true modality and anatomy."""
    from modan_pacs.ingest import build_index

    monkeypatch.chdir(tmp_path)
    truth = wrap_pool_as_export(shared_data, "export", seed=0)
    assert len(truth) == sum(len(pd.read_csv(p)) for p in shared_data.glob("pool_*/metadata.csv"))
    report = build_index("export", "index", workers=1, salt_file=tmp_path / "salt")
    assert anatomy_agreement(truth, report.tables.frame) == 1.0
    indexed = report.tables.frame.set_index("path")[["modality", "modality_label", "anatomy_label", "anatomy_source"]]
    found = truth.join(indexed.rename(columns={"modality": "header_modality"}), on="path")
    assert found["header_modality"].notna().all(), "a wrapped pool image is missing from the index"
    assert (found["header_modality"] == found["modality"]).all()
    expected_modality = found["modality"].map(
        {"MR": "MR", "US": "US", "DX": "radiograph", "CR": "radiograph", "CT": "CT"}
    )
    assert (found["modality_label"] == expected_modality).all()
    assert (found["anatomy_label"] == found["anatomy"]).all(), found.loc[
        found["anatomy_label"] != found["anatomy"]
    ].head()
    # the messiness is real: several header fields decided the anatomy
    assert {"body_part", "description", "anatomic_region"} <= set(found["anatomy_source"])


@pytest.mark.slow
@pytest.mark.data
def test_quick_proxy_study_writes_every_output(shared_data, tmp_path):
    settings = ProxySettings.quick()
    assert settings.pretrain_seeds == 2  # CI exercises the statistics over pretraining runs
    report = run_proxy_study(shared_data, tmp_path / "study", settings=settings)
    tables = pd.read_csv(report / "tables.csv")
    methods = ("modan-mulsupcon", "simclr", "supervised")
    assert set(tables["method"]) == {f"{m}.ps{k}" for m in methods for k in (0, 1)} | {"scratch"}
    assert set(tables["regime"]) == {"finetune", "linear"}
    assert tables["mean_auc"].between(0, 1).all()
    for name in methods:
        for k in (0, 1):
            assert (tmp_path / "study" / "runs" / name / f"seed_{k}" / "encoder.pt").is_file()
        assert (report / f"umap_{name}.ps0.png").is_file()
    seeds = pd.read_csv(report / "pretrain_seeds.csv")
    assert set(seeds["method"]) == {*methods, "scratch"}
    assert (seeds[seeds["method"] != "scratch"]["n_pretrain_runs"] == 2).all()
    assert {"p_two_sided", "p_two_sided_holm"} <= set(seeds.columns)
    assert (report / "pretrain_seeds.md").is_file()


@pytest.mark.data
def test_a_share_of_the_pool_can_be_written_without_anatomy(shared_data, tmp_path):
    """The unknown-anatomy choices need images whose headers name no anatomy: with a share of 0.3,
    about that share carries the modality only and the index finds no anatomy for exactly those."""
    from modan_pacs.ingest import build_index

    truth = wrap_pool_as_export(shared_data, tmp_path / "export", seed=0, no_anatomy_share=0.3)
    assert 0.25 < (~truth["anatomy_in_header"]).mean() < 0.35
    # a re-run (files already written, as when a study resumes) returns the same truth table
    pd.testing.assert_frame_equal(
        wrap_pool_as_export(shared_data, tmp_path / "export", seed=0, no_anatomy_share=0.3), truth
    )
    frame = build_index(tmp_path / "export", tmp_path / "index", workers=1, salt_file=tmp_path / "salt").tables.frame
    found = truth.join(frame.set_index("path")[["anatomy_label", "anatomy_source"]], on="path")
    hidden = found[~found["anatomy_in_header"]]
    assert hidden["anatomy_label"].isna().all() and (hidden["anatomy_source"] == "unknown").all()
    told = found[found["anatomy_in_header"]]
    assert (told["anatomy_label"] == told["anatomy"]).all()
