"""The model card (``README.md`` of an export folder) from an encoder's metadata and, optionally,
a benchmark report's ``tables.csv``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modan_pacs.errors import InputError
from modan_pacs.fileio import is_missing

from .folder import TORCHVISION_RGB_NAME, program_side

AUGMENTATION = (
    "two views per image: random resized crop (scale 0.2-1.0) to the input size, horizontal flip "
    "(p 0.5), brightness/contrast jitter (p 0.8)"
)
LOSSES = {
    "mulsupcon": "ModAn-MulSupCon: multi-label supervised contrastive loss over modality + anatomy labels "
    "read from DICOM headers (positives weighted by label overlap)",
    "supcon": "SupCon: supervised contrastive loss (positives share the label set)",
    "ntxent": "SimCLR (NT-Xent): self-supervised contrastive loss, no labels",
    "simclr": "SimCLR (NT-Xent): self-supervised contrastive loss, no labels",
    "cross_entropy": "supervised classification (cross-entropy) of one label group",
}


def read_report_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a report's ``tables.csv`` (a report folder, a benchmark run folder or the file).

    Raises:
        InputError: no ``tables.csv`` there, or one without the report's columns.
    """
    import pandas as pd

    from modan_pacs.report.stats import TABLE_COLUMNS

    path = Path(path)
    candidates = [path] if path.is_file() else [path / "tables.csv", path / "report" / "tables.csv"]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise InputError(f"{path}: no tables.csv (give a report folder, a benchmark run folder or tables.csv)")
    try:
        frame = pd.read_csv(found)
    except Exception as exc:  # empty or malformed CSV
        raise InputError(f"{found}: unreadable ({exc.__class__.__name__}: {exc})") from None
    needed = ["dataset", "regime", "method", "mean_auc", "std_auc", "n_repeats"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InputError(f"{found}: missing column(s) {missing}; expected the columns {TABLE_COLUMNS}")
    return frame.to_dict(orient="records")


def _label_table(labels: dict[str, Any] | None) -> list[str]:
    if not labels:
        return ["Unknown: this encoder file was written before encoders carried their training-data summary.", ""]
    names, counts, n = labels["names"], labels["counts"], labels["n_images"]
    lines = [f"{n:,} images (cache rows). Training images carrying each label:", ""]
    lines += ["| group | label | images | share |", "|---|---|---:|---:|"]
    for name, count in zip(names, counts):
        if count:
            group, _, value = name.partition(":")
            lines.append(f"| {group} | {value or name} | {count:,} | {count / n:.1%} |")
    absent = [name for name, count in zip(names, counts) if not count]
    if absent:
        lines += ["", f"Labels of the vocabulary with no training image: {', '.join(absent)}."]
    return [*lines, ""]


def _number(value: Any, digits: int = 4) -> str:
    return "–" if is_missing(value) else f"{value:.{digits}f}"


def _results_table(rows: list[dict[str, Any]] | None) -> list[str]:
    if not rows:
        return ["Not given (export with `--report REPORT_DIR` to include a benchmark's tables).", ""]
    has_ci = "ci_low" in rows[0] and "ci_high" in rows[0]
    head = "| dataset | regime | method | mean AUC | std | repeats |" + (" 95% CI |" if has_ci else "")
    lines = [head, "|---|---|---|---:|---:|---:|" + ("---|" if has_ci else "")]
    for row in rows:
        line = (
            f"| {row['dataset']} | {row['regime']} | {row['method']} | {_number(row['mean_auc'])} | "
            f"{_number(row['std_auc'])} | {int(row['n_repeats'])} |"
        )
        if has_ci:
            low, high = _number(row["ci_low"], 3), _number(row["ci_high"], 3)
            line += f" {low}–{high} |" if low != "–" else " – |"
        lines.append(line)
    return [
        *lines,
        "",
        "AUC = mean over repeats of the mean fold AUC of the paper's k-fold protocol (`modan-pacs benchmark`).",
        "",
    ]


def _recipe(config: dict[str, Any] | None, meta: dict[str, Any]) -> list[str]:
    if not config:
        return ["Unknown (no config recorded).", ""]
    loss = dict(config.get("loss", {}))
    name = loss.pop("name", "?")
    train, opt, sched = config.get("train", {}), config.get("optimizer", {}), config.get("schedule", {})
    params = ", ".join(f"{k} {v}" for k, v in loss.items()) or "defaults"
    return [
        f"- loss: `{name}` ({params}); "
        f"projection head `{config.get('model', {}).get('head')}` (dropped from the export)",
        f"- epochs: {meta.get('epochs_done', train.get('epochs'))} of {train.get('epochs')}; "
        f"global batch {train.get('batch_size')}; seed {config.get('seed')}",
        f"- optimiser: {opt.get('name')} lr {opt.get('lr')}, momentum {opt.get('momentum')}, "
        f"weight decay {opt.get('weight_decay')}",
        f"- schedule: {sched.get('name')}, warm-up {sched.get('warmup_epochs')} epoch(s) "
        f"from {sched.get('warmup_start_lr')}"
        + (f", milestones {sched.get('milestones')} x{sched.get('gamma')}" if sched.get("name") == "step" else ""),
        f"- augmentation: {AUGMENTATION}; "
        f"views {config.get('data', {}).get('size')}x{config.get('data', {}).get('size')}",
        "- full config: `config.json` -> `modan_pacs.config`",
        "",
    ]


def _loading(meta: dict[str, Any], files: list[str]) -> list[str]:
    size = meta.get("input_size") or 224
    lines = [
        "```python",
        "import modan_pacs, torch",
        'encoder = modan_pacs.load_encoder("THIS_FOLDER")          # nn.Module, eval mode, .meta = metadata',
        f"features = encoder(torch.rand(8, 1, {size}, {size}))      # (8, 512); input float in [0, 1]",
        "",
        "# torch alone (no modan-pacs):",
        'program = torch.export.load("THIS_FOLDER/encoder.pt2").module()',
        f"features = program(torch.rand(8, 1, {size}, {size}))",
        "```",
        "",
    ]
    if meta.get("stem") == "authors":
        lines += [
            "The authors' stem is torchvision's ResNet-18 with one input channel, so the weights load into",
            "timm and torchvision with no modan-pacs code (same features, tested):",
            "",
            "```python",
            "from safetensors.torch import load_file",
            "import timm, torch, torchvision",
            'm = timm.create_model("resnet18", in_chans=1, num_classes=0, pretrained=False)',
            'm.load_state_dict(load_file("model.safetensors"))              # keys are identical',
            "",
            "t = torchvision.models.resnet18(); t.fc = torch.nn.Identity()",
            f't.load_state_dict(load_file("{TORCHVISION_RGB_NAME}"))',
            "features = t.eval()(x.expand(-1, 3, -1, -1))                    # grey image on 3 channels",
            "```",
            "",
        ]
    else:
        from modan_pacs.models.encoder import STEMS

        kernel, stride, padding, maxpool = STEMS[meta["stem"]]
        swap = f"m.conv1 = nn.Conv2d(1, 64, {kernel}, {stride}, {padding}, bias=False); "
        swap += "" if maxpool else "m.maxpool = nn.Identity(); "
        lines += [
            f"The `{meta['stem']}` stem ({meta.get('stem_detail', '')}) is not a stock torchvision/timm ResNet-18;",
            "`model.safetensors` keeps torchvision's key names, so it loads into `torchvision.models.resnet18()` after",
            f"`{swap}m.fc = nn.Identity()`.",
            "",
        ]
    return lines


def render_model_card(
    meta: dict[str, Any], *, files: list[str], report_rows: list[dict[str, Any]] | None = None
) -> str:
    """Markdown model card: front matter, model, training data by label, method, recipe, downstream
    results, intended use and limits, how to load, files."""
    method = meta.get("method") or {}
    loss = method.get("loss", "unknown")
    version = meta.get("code_version") or {}
    commit = version.get("git_commit")
    lines = [
        "---",
        "tags: [medical-imaging, radiology, dicom, resnet18, contrastive-learning, modan-pacs]",
        "pipeline_tag: image-feature-extraction",
        "---",
        "",
        "# ResNet-18 radiology encoder (modan-pacs)",
        "",
        f"A 1-channel ResNet-18 ({meta.get('stem')} stem: {meta.get('stem_detail', '')}) pretrained with "
        f"`modan-pacs pretrain` ({LOSSES.get(loss, loss)}). It maps `(B, 1, H, W)` images to `(B, 512)` features "
        "(the classifier `fc` is removed).",
        "",
        "## Input",
        "",
        f"- one grey channel, trained on "
        f"{meta.get('input_size') or 'unknown'}x{meta.get('input_size') or 'unknown'} views "
        f"(the weights take any side; `encoder.pt2` takes {program_side(meta)})",
    ]
    intensity = meta.get("intensity") or {}
    lines += [f"- {key.replace('_', ' ')}: {value}" for key, value in intensity.items()]
    lines += ["", "## Training data", ""] + _label_table(meta.get("labels"))
    lines += ["## Method and recipe", ""] + _recipe(meta.get("config"), meta)
    lines += ["## Downstream results", ""] + _results_table(report_rows)
    lines += [
        "## Intended use and limits",
        "",
        "- Intended: a starting point (fine-tuning or frozen features) for research models on grey-level "
        "radiology images (CT, MR, radiographs, ultrasound), the use evaluated by the paper's downstream protocol.",
        "- Not a medical device and not validated for diagnosis; no output of this encoder is a finding.",
        "- Labels came from DICOM headers (modality, body part, descriptions) and are noisy; images of "
        "modalities or anatomies absent from the table above are out of distribution.",
        "- Trained on one collection: its scanners, protocols and population shape the features; check "
        "performance on your own data before relying on it.",
        "- Inputs must be scaled as above (window / display mapping to [0, 1], no mean/std normalisation); "
        "other scaling silently degrades the features.",
        "- The weights come from patient images; share them under the data owner's rules.",
        "",
        "## How to load",
        "",
    ] + _loading(meta, files)
    lines += [
        "## Files",
        "",
        *[f"- `{name}`" for name in files],
        "",
        f"Written by modan-pacs {version.get('package', 'unknown')}"
        + (f" (commit {commit[:12]}{', with uncommitted changes' if version.get('dirty') else ''})" if commit else "")
        + ".",
        "",
    ]
    if meta.get("note"):
        lines += [f"Note: {meta['note']}.", ""]
    return "\n".join(lines)
