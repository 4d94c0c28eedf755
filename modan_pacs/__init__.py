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
- :mod:`modan_pacs.demo`     the embedded default: generated export + end-to-end demo

Importing this package is cheap: no torch, no pydicom.
"""

__version__ = "0.1.0"
