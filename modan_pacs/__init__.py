"""modan-pacs: turn a hospital PACS into pretraining signal.

Stages of the data's journey, one subpackage each:

- :mod:`modan_pacs.labels`   vocabulary and multi-hot modality (+) anatomy labels
- :mod:`modan_pacs.ingest`   DICOM headers from an export folder -> labelled, PHI-free index
- :mod:`modan_pacs.pacs`     live PACS: C-FIND indexing, C-GET / C-MOVE / DICOMweb retrieval
- :mod:`modan_pacs.pixels`   decode once (pydicom + plugins, SimpleITK), window, cache
- :mod:`modan_pacs.data`     MONAI datasets and transforms, miniRIN, generic image folders
- :mod:`modan_pacs.losses`   MulSupCon (Eq. 3), SupCon, NT-Xent
- :mod:`modan_pacs.models`   1-channel ResNet-18 encoders and projection heads
- :mod:`modan_pacs.train`    the pretraining loop (AMP, DDP, resume)
- :mod:`modan_pacs.bench`    the paper's downstream protocol
- :mod:`modan_pacs.report`   statistics, tables and figures
- :mod:`modan_pacs.export`   share an encoder: safetensors, config.json, model card, torch.export
- :mod:`modan_pacs.demo`     the embedded default: generated export + end-to-end demo

Importing this package is cheap: no torch, no pydicom.

    >>> import modan_pacs
    >>> encoder = modan_pacs.load_encoder("runs/modan")  # doctest: +SKIP
"""

__version__ = "0.1.0"


def load_encoder(path):  # noqa: ANN001, ANN201  (annotations would import torch)
    """A ready pretrained encoder in one line: ``modan_pacs.load_encoder(path)``.

    ``path`` is an ``encoder.pt`` (or a training checkpoint), a run folder of ``modan-pacs
    pretrain``, an export folder of ``modan-pacs export`` or one of its ``model.safetensors`` /
    ``encoder.pt2`` files. Returns a ``torch.nn.Module`` in eval
    mode mapping ``(B, 1, H, W)`` float images in ``[0, 1]`` to ``(B, 512)`` features; its ``meta``
    attribute holds the metadata (stem, input size, intensity scaling, labels, config, code version).

    Raises:
        modan_pacs.errors.InputError: no encoder at ``path``, or not a 1-channel ResNet-18.
    """
    from modan_pacs.export import load_encoder as _load

    return _load(path)
