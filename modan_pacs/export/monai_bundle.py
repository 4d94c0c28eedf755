"""A MONAI bundle layout of an exported encoder (``modan-pacs export --monai-bundle``).

``OUT/monai_bundle/``: ``configs/metadata.json`` (version, library versions, ``network_data_format``:
a 1-channel float image in ``[0, 1]`` -> 512 features), ``configs/inference.json`` (``network_def``
built by ``modan_pacs.models.build_encoder`` with the run's stem, ``network`` with ``models/model.pt``
loaded), ``models/model.pt`` (the plain state dict) and ``docs/README.md`` (the model card).
MONAI's ``verify_net_in_out`` runs on it (tested); ``verify_metadata`` needs MONAI's schema file,
which is downloaded, so it is not run here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BUNDLE_DIR = "monai_bundle"
#: the metadata schema MONAI's model zoo bundles name (verify_metadata downloads it)
META_SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"


def bundle_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """``configs/metadata.json``: versions and the network's input/output format."""
    import monai
    import numpy
    import torch

    from modan_pacs import __version__

    size = int(meta.get("input_size") or 224)
    return {
        "schema": META_SCHEMA,
        "version": __version__,
        "changelog": {__version__: "exported by modan-pacs export"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"modan-pacs": __version__},
        "name": "modan-pacs ResNet-18 radiology encoder",
        "task": "feature extraction (pretrained encoder)",
        "description": f"1-channel ResNet-18 ({meta['stem']} stem) pretrained with modan-pacs; see docs/README.md",
        "authors": "",
        "copyright": "",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "multi",
                    "num_channels": 1,
                    "spatial_shape": [size, size],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "feature",
                    "format": "embedding",
                    "num_channels": int(meta.get("feature_dim", 512)),
                    "spatial_shape": [],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {},
                }
            },
        },
        "modan_pacs": meta,
    }


def bundle_inference_config(stem: str) -> dict[str, Any]:
    """``configs/inference.json``: the network definition and its weights."""
    return {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "modan_pacs.models.build_encoder", "stem": stem},
        "network": {
            "_target_": "modan_pacs.export.monai_bundle.bundle_network",
            "network": "@network_def",
            "weights": "$@bundle_root + '/models/model.pt'",
            "device": "@device",
        },
    }


def bundle_network(network, weights: str, device):  # noqa: ANN001, ANN201
    """``network`` with the bundle's weights loaded (strictly), on ``device``, in eval mode."""
    import torch

    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return network.to(device).eval()


def write_monai_bundle(out_dir: Path, state: dict[str, Any], meta: dict[str, Any], card: str) -> list[Path]:
    """Write ``out_dir/monai_bundle``; returns the files written."""
    import torch

    root = Path(out_dir) / BUNDLE_DIR
    for sub in ("configs", "models", "docs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    files = [
        root / "configs" / "metadata.json",
        root / "configs" / "inference.json",
        root / "models" / "model.pt",
        root / "docs" / "README.md",
    ]
    files[0].write_text(json.dumps(bundle_metadata(meta), indent=2) + "\n")
    files[1].write_text(json.dumps(bundle_inference_config(meta["stem"]), indent=2) + "\n")
    torch.save(state, files[2])
    files[3].write_text(card)
    return files
