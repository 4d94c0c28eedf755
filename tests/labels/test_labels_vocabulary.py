"""Vocabulary: loading/validation, mapping order, RadImageNet names, multi-hot encoding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from modan_pacs.errors import ConfigError, InputError
from modan_pacs.labels import Vocabulary, label_frame


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.load()


def test_shipped_groups_and_label_order(vocab):
    assert list(vocab.groups) == ["modality", "anatomy"]
    for m in ["CT", "MR", "US", "radiograph", "MG", "PT", "NM", "XA"]:
        assert m in vocab.groups["modality"]
    for a in [
        "abdomen",
        "lung",
        "ankle-foot",
        "brain",
        "hip",
        "knee",
        "shoulder",
        "spine",
        "thyroid",
        "breast",
        "pelvis",
        "neck",
        "heart",
        "extremity",
        "fetal",
    ]:
        assert a in vocab.groups["anatomy"]
    assert vocab.label_names[0] == "modality:CT"
    assert len(vocab.label_names) == len(vocab.groups["modality"]) + len(vocab.groups["anatomy"])


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("CT", "CT"),
        ("mr", "MR"),
        (" DX ", "radiograph"),
        ("CR", "radiograph"),
        ("DR", "radiograph"),
        ("RF", "XA"),
        ("OT", None),
        (None, None),
    ],
)
def test_map_modality(vocab, raw, expected):
    assert vocab.map_modality(raw) == expected


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({"body_part": "CHEST"}, ("lung", "body_part")),
        ({"body_part": "THORAX"}, ("lung", "body_part")),
        ({"body_part": "chest"}, ("lung", "body_part")),
        ({"body_part": "ABD"}, ("abdomen", "body_part")),
        ({"body_part": "T-SPINE"}, ("spine", "body_part")),
        ({"body_part": "Knee "}, ("knee", "body_part")),
        ({"region_code": "SCT:818981001"}, ("abdomen", "anatomic_region")),
        ({"region_code": "SRT:T-D4000", "region_meaning": "Abdomen"}, ("abdomen", "anatomic_region")),
        ({"region_meaning": "Shoulder"}, ("shoulder", "anatomic_region")),
        ({"texts": [None, "L-SPINE SAG T2", "MRI"]}, ("spine", "description")),
        ({"texts": ["CT ABD/PELVIS W CONTRAST"]}, ("abdomen|pelvis", "description")),
        ({"texts": ["US fetal head circumference"]}, ("fetal", "description")),
        ({"texts": ["Axial T2 spin echo"]}, (None, "unknown")),
        # BodyPartExamined wins over a conflicting region code; a contradicting description is a conflict.
        ({"body_part": "KNEE", "region_code": "SCT:818981001"}, ("knee", "body_part")),
        ({"body_part": "KNEE", "region_code": "SCT:818981001", "texts": ["brain"]}, (None, "conflict")),
    ],
)
def test_map_anatomy_order(vocab, kwargs, expected):
    assert vocab.map_anatomy(**kwargs) == expected


def test_radimagenet_folders(vocab):
    expected = {
        "abd": "abdomen",
        "lung": "lung",
        "af": "ankle-foot",
        "brain": "brain",
        "hip": "hip",
        "knee": "knee",
        "shoulder": "shoulder",
        "spine": "spine",
        "thyroid": "thyroid",
    }
    for folder, anatomy in expected.items():
        for modality in ("CT", "MR", "US"):
            assert vocab.map_radimagenet(modality, folder) == (modality, anatomy)
    with pytest.raises(InputError, match="xyz"):
        vocab.map_radimagenet("CT", "xyz")


def test_encode_frame_matches_loop(vocab):
    df = pd.DataFrame({"modality_label": ["CT", None, "US", "MR"], "anatomy_label": ["lung", "brain", None, None]})
    got = vocab.encode_frame(df)
    expected = np.zeros((4, len(vocab.label_names)), np.uint8)
    for i, (m, a) in enumerate(zip(df.modality_label, df.anatomy_label)):
        if isinstance(m, str):
            expected[i, vocab.label_names.index(f"modality:{m}")] = 1
        if isinstance(a, str):
            expected[i, vocab.label_names.index(f"anatomy:{a}")] = 1
    assert got.dtype == np.uint8 and np.array_equal(got, expected)
    with pytest.raises(InputError, match="not a anatomy"):
        vocab.encode_frame(pd.DataFrame({"modality_label": ["CT"], "anatomy_label": ["elbowz"]}))


def test_save_load_roundtrip_and_errors(vocab, tmp_path):
    path = vocab.save(tmp_path / "v.yaml")
    again = Vocabulary.load(path)
    assert again.label_names == vocab.label_names
    data = yaml.safe_load(path.read_text())
    data.pop("label_names")
    data["anatomys"] = []
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="anatomys.*did you mean 'anatomies'"):
        Vocabulary.load(tmp_path / "bad.yaml")
    data.pop("anatomys")
    data["label_groups"] = ["modality", "anatomyy"]
    (tmp_path / "bad2.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="did you mean 'anatomy'"):
        Vocabulary.load(tmp_path / "bad2.yaml")
    with pytest.raises(InputError, match="does not exist"):
        Vocabulary.load(tmp_path / "missing.yaml")


def test_extra_group_and_label_frame(vocab, tmp_path):
    data = yaml.safe_load(vocab.to_yaml())
    data.pop("label_names")
    data["label_groups"] = ["modality", "anatomy", "manufacturer"]
    v = Vocabulary.from_dict(data)
    assert v.label_names[-1].startswith("manufacturer:")
    frame = pd.DataFrame(
        {
            "modality": ["CT", "XX"],
            "body_part_examined": [None, "CHEST"],
            "series_description": ["Head 5mm", None],
            "manufacturer": ["GE MEDICAL SYSTEMS", None],
        }
    )
    out = label_frame(frame, v)
    assert out["modality_label"].tolist() == ["CT", None]
    assert out["anatomy_label"].tolist() == ["brain", "lung"]
    assert out["anatomy_source"].tolist() == ["description", "body_part"]
    assert out["manufacturer_label"].tolist() == ["GE", None]
    labels = v.encode_frame(out)
    assert labels[0, v.label_names.index("manufacturer:GE")] == 1 and labels[1].sum() == 1


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        # a more specific description wins over a generic body part
        ({"body_part": "NECK", "texts": ["Thyroid"]}, ("thyroid", "refined")),
        ({"body_part": "NECK", "texts": ["US THYROID LEFT LOBE"]}, ("thyroid", "refined")),
        ({"body_part": "CHEST", "texts": ["US BREAST RIGHT"]}, ("breast", "refined")),
        ({"body_part": "EXTREMITY", "texts": ["MR KNEE W/O"]}, ("knee", "refined")),
        ({"body_part": "PELVIS", "texts": ["OB US FETAL BIOMETRY"]}, ("fetal", "refined")),
        # a description contradicting the body part: recorded, anatomy unknown by default
        ({"body_part": "CHEST", "texts": ["CT ABD PELVIS"]}, (None, "conflict")),
        ({"body_part": "THYROID", "texts": ["NECK"]}, ("thyroid", "body_part")),  # the header is the more specific
        # agreeing or overlapping: the header field
        ({"body_part": "CHEST", "texts": ["CT CHEST ABD PELVIS"]}, ("lung", "body_part")),
        ({"body_part": "NECK", "texts": ["SOFT TISSUE NECK"]}, ("neck", "body_part")),
        # multi-region values map to every region they name
        ({"body_part": "CHEST_TO_PELVIS"}, ("abdomen|lung|pelvis", "body_part")),
        ({"body_part": "CHESTABDPELVIS"}, ("abdomen|lung|pelvis", "body_part")),
        ({"body_part": "ABDOMEN_PELVIS"}, ("abdomen|pelvis", "body_part")),
        ({"body_part": "WHOLEBODY"}, ("abdomen|lung|brain|pelvis|neck|extremity", "body_part")),
        ({"body_part": "HEAD_NECK"}, ("brain|neck", "body_part")),
        ({"texts": ["PET/CT WHOLE BODY"]}, ("abdomen|lung|brain|pelvis|neck|extremity", "description")),
        ({"body_part": "ABDOMEN", "texts": ["CT ABD PELVIS"]}, ("abdomen", "body_part")),
    ],
)
def test_specific_sources_conflicts_and_multi_regions(vocab, kwargs, expected):
    assert vocab.map_anatomy(**kwargs) == expected


def test_conflict_policy_and_multi_region_encoding(tmp_path):
    data = yaml.safe_load(Vocabulary.load().to_yaml())
    data.pop("label_names")
    for policy, expected in (("body_part", "lung"), ("description", "abdomen|pelvis"), ("unknown", None)):
        vocab = Vocabulary.from_dict({**data, "anatomy_conflict": policy})
        assert vocab.map_anatomy(body_part="CHEST", texts=["CT ABD PELVIS"]) == (expected, "conflict")
    vocab = Vocabulary.from_dict(data)
    frame = label_frame(
        pd.DataFrame(
            {
                "modality": ["CT", "CT", "US"],
                "body_part_examined": ["CHEST_TO_PELVIS", "CHEST", "NECK"],
                "series_description": [None, "CT ABD PELVIS", "Thyroid"],
            }
        ),
        vocab,
    )
    assert frame["anatomy_label"].tolist() == ["abdomen|lung|pelvis", None, "thyroid"]
    assert frame["anatomy_source"].tolist() == ["body_part", "conflict", "refined"]
    labels = vocab.encode_frame(frame)
    names = vocab.label_names
    assert {names[i] for i in np.flatnonzero(labels[0])} == {
        "modality:CT",
        "anatomy:lung",
        "anatomy:abdomen",
        "anatomy:pelvis",
    }
    assert {names[i] for i in np.flatnonzero(labels[1])} == {"modality:CT"}
    bad = {
        **data,
        "anatomies": [dict(a, refines=["nowhere"]) if a["name"] == "thyroid" else a for a in data["anatomies"]],
    }
    with pytest.raises(ConfigError, match="refines 'nowhere'"):
        Vocabulary.from_dict(bad)
    bad = {**data, "multi_regions": [{"name": "x", "anatomies": ["lung", "moon"]}]}
    with pytest.raises(ConfigError, match="names 'moon'"):
        Vocabulary.from_dict(bad)
