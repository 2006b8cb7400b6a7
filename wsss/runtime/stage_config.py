"""Typed, frozen stage configs: each stage reads a view of exactly the config keys it uses.

A view is a frozen dataclass whose fields are keys of one config section (``SECTION``, e.g. ``cls``), or whose
fields are such section views (a nested view, e.g. calibrate's ``cls`` + ``cam``). The rules build a stage's
``--params`` with :func:`stage_params` from the run's validated config, so they send exactly the view's fields and a
changed value reruns exactly the stages that read it; the stage parses them back with :func:`parse_view` (through
``wsss.runtime.cli.run_stage``), which rejects a missing or an unknown key. Defaults live only in the schema.

The classifier's network keys depend on the method: :class:`ClsNet` carries the common ones as fields and the
method's own (``Method.cls_keys``, e.g. VWL's ``k_words``) as extra keys, so a new method adds its keys in its own
module. Views are read-only mappings too (``view["key"]``), for the library functions that take a config section.

This module imports no torch (the Snakefile reads it).
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from wsss.methods import get_method
from wsss.runtime.errors import InputError
from wsss.runtime.io import read_json

V = TypeVar("V", bound="View")
log = logging.getLogger("wsss")


@dataclass(frozen=True, kw_only=True)
class View(Mapping[str, Any]):
    """Base of the stage views: a frozen dataclass that is also a read-only mapping of its keys."""

    SECTION: ClassVar[str | None] = None  # the config section of a flat view's fields; None for a nested view
    OPEN: ClassVar[bool] = False  # a flat view that takes keys beyond its fields (the method's, see ClsNet)
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)  # a flat view's keys beyond its fields

    @classmethod
    def keys_of(cls) -> tuple[str, ...]:
        """The view's own keys (its dataclass fields, without ``extra``)."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    @classmethod
    def extra_keys(cls, run: Mapping[str, Any]) -> tuple[str, ...]:
        """Keys beyond the fields that this view carries for run config ``run`` (none unless overridden)."""
        return ()

    def _all(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.keys_of()}, **self.extra}

    def __getitem__(self, key: str) -> Any:
        if key in self.keys_of():
            return getattr(self, key)
        return self.extra[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self.keys_of()) + len(self.extra)

    def to_params(self) -> dict[str, Any]:
        """The view as JSON-able params (nested views as objects)."""
        return {k: v.to_params() if isinstance(v, View) else v for k, v in self._all().items()}

    @classmethod
    def build(cls: type[V], run: Mapping[str, Any], config: Mapping[str, Any]) -> V:
        """The view of a run's effective config ``run`` (:func:`wsss.runtime.config.run_config`; a section it lacks, such
        as ``gates``, comes from the validated top-level ``config``)."""
        hints = typing.get_type_hints(cls)
        if cls.SECTION is None:
            values = {k: _view_type(hints[k]).build(run, config) for k in cls.keys_of()}
            return cls(**values)
        section = run[cls.SECTION] if cls.SECTION in run else config[cls.SECTION]
        extra = {k: section[k] for k in cls.extra_keys(run)}
        return cls(**{k: section[k] for k in cls.keys_of()}, extra=extra)

    @classmethod
    def pick(cls, source: Mapping[str, Any]) -> dict[str, Any]:
        """The view's params picked from ``source``, which may hold more keys (a whole section, or for a nested
        view a mapping of whole sections): for scripts and tests that hold a section rather than a run config."""
        if cls.SECTION is None:
            hints = typing.get_type_hints(cls)
            return {k: _view_type(hints[k]).pick(source[k]) for k in cls.keys_of()}
        return dict(source) if cls.OPEN else {k: source[k] for k in cls.keys_of()}

    @classmethod
    def parse(cls: type[V], params: Mapping[str, Any], where: str = "params") -> V:
        """The view of a stage's ``--params``: exactly the view's keys (an ``OPEN`` view's extra keys are those the
        params carry beyond its fields); a missing or an unknown key is an InputError naming it."""
        if not isinstance(params, Mapping):
            raise InputError(where, f"must be an object, got {type(params).__name__}")
        hints = typing.get_type_hints(cls)
        missing = [k for k in cls.keys_of() if k not in params]
        if missing:
            raise InputError(f"{where}.{missing[0]}", "required")
        unknown = sorted(set(params) - set(cls.keys_of()))
        if unknown and not cls.OPEN:
            raise InputError(where, f"unknown keys {unknown}; known: {list(cls.keys_of())}")
        if cls.SECTION is None:
            return cls(**{k: _view_type(hints[k]).parse(params[k], f"{where}.{k}") for k in cls.keys_of()})
        extra = {k: v for k, v in params.items() if k not in cls.keys_of()}
        return cls(**{k: params[k] for k in cls.keys_of()}, extra=extra)


def _view_type(hint: Any) -> type[View]:
    if isinstance(hint, type) and issubclass(hint, View):
        return hint
    raise TypeError(f"a nested view's fields must be views, got {hint!r}")


Number = float  # a JSON number (int or float)


# ---------------------------------------------------------------------------------------------- cls: the classifier


@dataclass(frozen=True, kw_only=True)
class ClsNet(View):
    """The classifier's network: what building or loading it reads (common keys; the method's own as extras)."""

    SECTION = "cls"
    OPEN = True
    backbone: int
    pretrained: str
    pretrained_sha256: str | None
    norm: str
    freeze_stem: bool

    @classmethod
    def extra_keys(cls, run: Mapping[str, Any]) -> tuple[str, ...]:
        return get_method(run["method"]).cls_keys


@dataclass(frozen=True, kw_only=True)
class TrainCls(ClsNet):
    """train_cls: the network and its training."""

    holdout_fraction: Number
    epochs: Any  # a number, or "auto"
    max_epochs: Number
    patience: int
    min_delta: Number
    eval_every: int | None
    batch_size: int
    accumulate: int
    optimizer: str
    lr: Number
    lr_mult_new: Number
    weight_decay: Number
    momentum: Number
    poly_power: Number
    resize_long: list[int]
    crop: int
    seed: int
    checkpoint_every: int
    workers: int
    amp: bool


@dataclass(frozen=True, kw_only=True)
class ClsScoring(ClsNet):
    """A trained classifier scoring regions of its own training images (calibration): the network and its
    held-out slice."""

    holdout_fraction: Number


# ---------------------------------------------------------------------------------------------- cam


@dataclass(frozen=True, kw_only=True)
class CamInfer(View):
    SECTION = "cam"
    scales: list[float]
    fusion: str
    batch_scales: bool
    batch_pixels: int | None
    high_res: str


@dataclass(frozen=True, kw_only=True)
class CamEval(View):
    SECTION = "cam"
    bg_score: Any  # a number, or "auto"
    sweep: list[float]


@dataclass(frozen=True, kw_only=True)
class CamCalibrate(View):
    SECTION = "cam"
    sweep: list[float]
    calibration_images: int
    calibration_se: Number
    bracket_area_ratio: Number


@dataclass(frozen=True, kw_only=True)
class CamCalibrationImages(View):
    SECTION = "cam"
    calibration_images: int


@dataclass(frozen=True, kw_only=True)
class InferCam(View):
    cls: ClsNet
    cam: CamInfer


@dataclass(frozen=True, kw_only=True)
class EvalCam(View):
    cam: CamEval


@dataclass(frozen=True, kw_only=True)
class Calibrate(View):
    cls: ClsScoring
    cam: CamCalibrate


# ---------------------------------------------------------------------------------------------- irn


@dataclass(frozen=True, kw_only=True)
class ClsBackbone(View):
    """The classifier's depth (IRNet's backbone under ``irn.pretrained: from_cls``)."""

    SECTION = "cls"
    backbone: int


@dataclass(frozen=True, kw_only=True)
class IrLabel(View):
    SECTION = "irn"
    conf_fg: Any  # a number, or "auto"
    conf_bg: Any
    crf_gt_prob: Number
    crf_iters: int
    crf_pos: list[Number]
    crf_bi: list[Number]


@dataclass(frozen=True, kw_only=True)
class IrnTrain(View):
    SECTION = "irn"
    backbone: int
    pretrained: str
    pretrained_sha256: str | None
    crop: int
    scale_range: list[Number]
    radius: int
    batch_size: int
    accumulate: int
    epochs: Number
    optimizer: str
    lr: Number
    lr_mult_disp: Number
    weight_decay: Number
    momentum: Number
    poly_power: Number
    seed: int
    checkpoint_every: int
    workers: int
    amp: bool


@dataclass(frozen=True, kw_only=True)
class IrnPseudo(View):
    SECTION = "irn"
    backbone: int
    pretrained: str
    rw_radius: int
    beta: Number
    exp_times: int
    bg_threshold: Any  # a number, or "auto"
    boundary_canvas: Any


@dataclass(frozen=True, kw_only=True)
class IrnSweep(IrnPseudo):
    sweep: list[float]


@dataclass(frozen=True, kw_only=True)
class CamToIrLabel(View):
    irn: IrLabel


@dataclass(frozen=True, kw_only=True)
class TrainIrn(View):
    irn: IrnTrain
    cls: ClsBackbone


@dataclass(frozen=True, kw_only=True)
class MakePseudo(View):
    irn: IrnPseudo
    cls: ClsBackbone


@dataclass(frozen=True, kw_only=True)
class SweepPseudo(View):
    irn: IrnSweep
    cls: ClsBackbone


@dataclass(frozen=True, kw_only=True)
class CalibratePseudo(View):
    cls: ClsScoring
    cam: CamCalibrationImages
    irn: IrnSweep


# ---------------------------------------------------------------------------------------------- seg


@dataclass(frozen=True, kw_only=True)
class SegNet(View):
    """DeepLab at test time: the network and its test-time scales and flip."""

    SECTION = "seg"
    backbone: int
    norm: str
    style: str
    aspp_rates: list[int]
    msc_scales: list[float]
    test_scales: list[float]
    test_flip: bool


@dataclass(frozen=True, kw_only=True)
class SegFit(SegNet):
    label_source: str


@dataclass(frozen=True, kw_only=True)
class TrainSeg(View):
    SECTION = "seg"
    backbone: int
    pretrained: str
    pretrained_sha256: str | None
    norm: str
    style: str
    aspp_rates: list[int]
    msc_scales: list[float]
    label_source: str
    batch_size: int
    accumulate: int
    iterations: int
    optimizer: str
    lr: Number
    lr_mult_weight: Number
    lr_mult_bias: Number
    weight_decay: Number
    momentum: Number
    poly_power: Number
    crop: int
    scales: list[float]
    scale_sampling: str
    flip: bool
    loss_reduction: str
    amp: bool
    seed: int
    checkpoint_every: int
    workers: int


@dataclass(frozen=True, kw_only=True)
class Crf(View):
    SECTION = "seg"
    crf: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Predict(SegNet):
    crf: dict[str, Any]
    predict_crf: bool


# ---------------------------------------------------------------------------------------------- gates


@dataclass(frozen=True, kw_only=True)
class ClsGate(View):
    SECTION = "gates"
    enabled: bool
    min_cls_f1: Number
    min_prior_gain: Number | None
    min_class_images: int


@dataclass(frozen=True, kw_only=True)
class CamGateKeys(View):
    SECTION = "gates"
    enabled: bool
    min_cam_evidence: Number | None
    cam_evidence_se: Number
    max_cam_overlap: Number | None
    min_gate_pairs: int


@dataclass(frozen=True, kw_only=True)
class CamGateCam(View):
    SECTION = "cam"
    bg_score: Any  # a number, or "auto"
    calibration_images: int


@dataclass(frozen=True, kw_only=True)
class CamGate(View):
    cls: ClsScoring
    cam: CamGateCam
    gates: CamGateKeys


@dataclass(frozen=True, kw_only=True)
class SegGateKeys(View):
    SECTION = "gates"
    enabled: bool
    min_seg_fit: Number
    seg_fit_images: int


@dataclass(frozen=True, kw_only=True)
class SegGate(View):
    gates: SegGateKeys
    seg: SegFit


@dataclass(frozen=True, kw_only=True)
class CheckPseudo(View):
    SECTION = "gates"
    coverage_ratio: Number
    coverage_min_pixels: Number


STAGES: dict[str, type[View]] = {
    "train_cls": TrainCls,
    "cls_gate": ClsGate,
    "cam_gate": CamGate,
    "infer_cam": InferCam,
    "eval_cam": EvalCam,
    "calibrate": Calibrate,
    "cam_to_ir_label": CamToIrLabel,
    "train_irn": TrainIrn,
    "make_pseudo": MakePseudo,
    "sweep_pseudo": SweepPseudo,
    "calibrate_pseudo": CalibratePseudo,
    "check_pseudo": CheckPseudo,
    "train_seg": TrainSeg,
    "seg_gate": SegGate,
    "infer_seg": SegNet,
    "export_model": SegNet,
    "export_program": SegNet,
    "crf": Crf,
    "predict": Predict,
}
"""Stage script name → the view of its ``--params``. Stages not listed read no config section through --params
(their inputs are files and arguments), or a document of their own (summary, report_figures, prepare_dataset,
dataset_report)."""

RULE_KEYS: dict[str, tuple[str, ...]] = {
    "cls": ("train_split", "gpus"),
    "cam": ("shards", "infer_splits", "eval"),
    "irn": ("train_split", "gpus", "crf_workers", "pseudo_splits", "eval"),
    "seg": ("train_split", "gpus", "shards", "crf_workers", "submission_split"),
    "gates": (),
}
"""Keys the Snakefile reads to shape the DAG (which splits, how many shards, GPUs, threads), or passes as a
command-line argument (``train_split`` as ``--split``); a stage reads them through its arguments, not --params."""


def stage_params(stage: str, run: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``--params`` of ``stage`` for a run: exactly its view's keys, from the run's effective config."""
    return STAGES[stage].build(run, config).to_params()


def parse_view(stage: str, params: Mapping[str, Any]) -> View:
    """The frozen view of ``stage``'s ``--params`` (:meth:`View.parse`)."""
    return STAGES[stage].parse(params)


def view_keys(view: type[View]) -> dict[str, set[str]]:
    """Section → the keys a view's class reads there (its fields; nested views merged)."""
    if view.SECTION is not None:
        return {view.SECTION: set(view.keys_of())}
    hints = typing.get_type_hints(view)
    out: dict[str, set[str]] = {}
    for name in view.keys_of():
        for section, keys in view_keys(_view_type(hints[name])).items():
            out.setdefault(section, set()).update(keys)
    return out


def resolve_auto(
    section: Mapping[str, Any], keys: Sequence[str], calibration: Sequence[str], where: str
) -> dict[str, Any]:
    """A copy of the config ``section`` (``where`` names it, e.g. ``irn``) with every ``auto`` value among ``keys``
    replaced by the calibrated one from the first file of ``calibration``; a missing file or value is an
    InputError naming it."""
    resolved = dict(section)
    auto = [key for key in keys if resolved.get(key) == "auto"]
    if not auto:
        return resolved
    if not calibration:
        raise InputError("--calibration", f"{where}.{auto[0]} is auto: give the run's calibration file")
    values = read_json(calibration[0], "calibration")
    for key in auto:
        if not isinstance(values.get(key), (int, float)) or isinstance(values.get(key), bool):
            raise InputError(calibration[0], f"has no {key} for {where}.{key}: auto (see its log)")
        resolved[key] = float(values[key])
        log.info("%s.%s %.2f from %s", where, key, resolved[key], calibration[0])
    return resolved


__all__ = ["RULE_KEYS", "STAGES", "View", "parse_view", "resolve_auto", "stage_params", "view_keys"]
