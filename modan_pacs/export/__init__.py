"""Share an encoder: a Hugging Face style folder (safetensors, config.json, model card), a
``torch.export`` program, torchvision / timm weights, and one-line loading of any of them.

- :func:`export_encoder`  run folder or ``encoder.pt`` -> export folder (``modan-pacs export``)
- :func:`load_encoder`    ``encoder.pt``, run folder or export folder -> ``nn.Module``
"""

from .folder import (
    CONFIG_NAME,
    PROGRAM_NAME,
    TORCHVISION_RGB_NAME,
    WEIGHTS_NAME,
    ExportResult,
    export_encoder,
    find_encoder,
    load_encoder,
    read_export_folder,
    torchvision_rgb_state,
)

__all__ = [
    "CONFIG_NAME",
    "PROGRAM_NAME",
    "TORCHVISION_RGB_NAME",
    "WEIGHTS_NAME",
    "ExportResult",
    "export_encoder",
    "find_encoder",
    "load_encoder",
    "read_export_folder",
    "torchvision_rgb_state",
]
