"""Typed configuration: params.yaml is loaded once into a validated `Config`.

Every stage takes its section of this object; nothing else reads params.yaml.
An unknown key, a wrong type or an impossible value is rejected before any work
starts, with one line naming the key (see `load_config`).

Strict on purpose: a typo must not become a different run. Types are not
coerced ("64", 50.0 or true for an int are errors; an int is fine for a float),
inf and NaN are refused, and so are a duplicated key (YAML would silently keep
the last one: a second `train:` resets the first to defaults) and an empty file
(it would run on built-in defaults that differ from the committed params.yaml).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.layout import Layout

DEFAULT_PARAMS = Path("params.yaml")
DASK_ADDRESS_ENV = "S2P_DASK_ADDRESS"


class ConfigError(ValueError):
    """A params.yaml problem, already formatted as one readable line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class TaskRunnerConfig(_Section):
    """Where the Prefect tasks of a fan-out stage run.

    inprocess: plain calls in the flow's process (no overhead, the default);
    local_dask: a local Dask cluster of `workers` processes;
    dask_address: an existing scheduler at `address`, or in the environment
    variable S2P_DASK_ADDRESS when `address` is null.
    """

    kind: Literal["inprocess", "local_dask", "dask_address"] = "inprocess"
    workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    address: Optional[str] = None


# Where a stage writes and how its work is scheduled, never what it makes: these
# keys of a params section must not enter a shard fingerprint or an output
# (tests/test_ingest.py: switching ingest to Dask re-runs nothing downstream).
EXECUTION_KEYS = frozenset({"root", "runner", "chunks_in_flight", "shards_in_flight"})


def content_settings(section: BaseModel) -> dict:
    """A params section without its EXECUTION_KEYS: what its output depends on."""
    return section.model_dump(mode="json", exclude=set(EXECUTION_KEYS))


def dask_address(cfg: TaskRunnerConfig, key: str) -> str:
    """The scheduler of a `dask_address` runner; `key` names the params section."""
    address = cfg.address or os.environ.get(DASK_ADDRESS_ENV)
    if not address:
        raise ConfigError(
            f"params.yaml: {key}.runner.address: null and ${DASK_ADDRESS_ENV} is not set "
            "(kind dask_address needs a scheduler address)"
        )
    return address


class SplitRatios(_Section):
    train: float = Field(0.9, ge=0, le=1)
    val: float = Field(0.05, ge=0, le=1)
    test: float = Field(0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        return self


class DataConfig(_Section):
    root: str = "data"
    resolution: int = Field(64, ge=16, le=4096)
    shard_rows: int = Field(256, ge=1)
    row_group_rows: int = Field(32, ge=1)
    image_format: Literal["png", "webp", "jpeg"] = "png"
    split: SplitRatios = SplitRatios()
    # What the split is drawn from: the decoded pixels' hash (pixels), or a
    # perceptual hash, so near-duplicates of a picture land in one split.
    split_by: Literal["pixels", "perceptual"] = "pixels"


class IngestConfig(_Section):
    source: Literal["toon", "folder"] = "toon"
    toon_count: int = Field(1500, ge=1)
    seed: int = 0
    folder: Optional[str] = None
    min_size: int = Field(64, ge=1)
    # Short side scaled to data.resolution, then centre crop (illustrations are
    # mostly portrait; a crop keeps the character's scale, padding would not).
    resize: Literal["crop", "pad"] = "crop"
    # Mean per-pixel chroma (HSV saturation*value, 0..1) under which an image
    # counts as grey/monochrome and is rejected.
    min_colourfulness: float = Field(0.03, ge=0, le=1)
    max_pixels: int = Field(100_000_000, ge=1)
    # A file or archive member larger than this is rejected before it is read
    # (a 1 MB zip can hold a 1 GiB member): bounds ingest's memory per input.
    max_bytes: int = Field(64 * 2**20, ge=1)
    chunks_in_flight: int = Field(4, ge=1)
    runner: TaskRunnerConfig = TaskRunnerConfig()


class ExtractConfig(_Section):
    method: Literal["auto", "sketchkeras", "classical"] = "auto"
    weights: Optional[str] = "models/mod.h5"
    variant: Literal["raw", "enhanced", "pured"] = "enhanced"
    # Classical fallback variant; highpass_grey agreed best with real sketchKeras.
    classical: Literal["highpass", "highpass_grey", "xdog"] = "highpass_grey"
    # sketchKeras works at long side 512 (the original); smaller is faster but
    # off the scale the network was trained at.
    work_size: int = Field(512, ge=16, multiple_of=16)
    # Images per sketchKeras forward pass (x3 channels); ~1 GB each at 512 px.
    batch_images: int = Field(4, ge=1)
    shards_in_flight: int = Field(2, ge=1)
    runner: TaskRunnerConfig = TaskRunnerConfig()


STYLE_CODE_DIMS = {"fc1": 4096, "fc1_relu": 4096, "pooled": 2944, "bands": 4416,
                   "oracle_palette": 24}


class FeaturizeConfig(_Section):
    # What V(y) is (pipeline/style_encoder.py): fc1 (the paper: VGG19 fc1 before
    # its ReLU), fc1_relu, pooled (ours: per-channel mean/std of five VGG19 layers,
    # translation-invariant), bands (ours: their means over three horizontal
    # bands), or oracle_palette (a diagnostic: the toon's true palette, toon data
    # only; pipeline/oracle.py).
    code: Literal["fc1", "fc1_relu", "pooled", "bands", "oracle_palette"] = "bands"
    # ImageNet VGG19 weights; null = torch hub cache location, else seeded random.
    weights: Optional[str] = None
    input_size: int = Field(128, ge=32, le=512)
    augmented_copies: int = Field(1, ge=0, le=16)
    # Strength of the augmented-self reference's distortion (pipeline/augment.py).
    distortion: Literal["strong", "mild"] = "strong"
    batch_size: int = Field(32, ge=1)
    seed: int = 0
    # bf16: ~1.7x faster VGG on CPUs with AVX512-BF16/AMX, codes within ~1% of fp32.
    precision: Literal["fp32", "bf16"] = "bf16"
    runner: TaskRunnerConfig = TaskRunnerConfig()


class ModelConfig(_Section):
    depth: int = Field(3, ge=1, le=7)
    base_width: int = Field(16, ge=4)
    max_width: int = Field(256, ge=4)
    # Explicit widths (the paper profile): encoder levels 0..depth-1, the middle,
    # decoder levels coarsest first; null = derived from base_width/max_width.
    encoder_widths: Optional[list[int]] = None
    middle_width: Optional[int] = Field(None, ge=1)
    decoder_widths: Optional[list[int]] = None
    res_blocks: int = Field(1, ge=1)
    middle_blocks: int = Field(2, ge=1)  # residual blocks of the middle
    # group: batch-size independent, no cross-GPU sync under DDP (see models/generator.py)
    norm: Literal["group", "batch", "none"] = "group"
    # Width of the code; derived from featurize.code when unset (the usual case).
    style_dim: Optional[int] = Field(None, ge=1)
    # Where V(y) enters: concat (the paper: the middle only), film (ours: a
    # per-channel scale and shift after every norm of middle and decoder), both.
    style_inject: Literal["concat", "film", "both"] = "film"
    style_proj: int = Field(256, ge=1)  # the dense layer over the code (paper: 2048)
    # Standardisation: std floor relative to the median std, and a clip of |z|.
    style_std_floor: float = Field(0.1, gt=0, le=1)
    style_clip: float = Field(8.0, gt=0)
    disc_width: int = Field(16, ge=4)
    disc_depth: int = Field(4, ge=2, le=8)
    # Colour-rarity weighting of every L1 term (pipeline/losses.py); 0 = the paper's plain L1.
    l1_balance: float = Field(0.5, ge=0, le=2)
    guide_grey_weight: float = Field(0.3, ge=0)
    guide_colour_weight: float = Field(0.9, ge=0)
    adversarial: Literal["log_likelihood", "least_squares", "dcgan"] = "log_likelihood"
    adversarial_weight: float = Field(0.01, ge=0)
    style_norm: Literal["max", "saturate"] = "max"
    style_norm_scale: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _widths_match_depth(self):
        for key in ("encoder_widths", "decoder_widths"):
            value = getattr(self, key)
            if value is not None and (len(value) != self.depth or min(value) < 1):
                raise ValueError(f"{key} must list {self.depth} positive widths "
                                 f"(one per level, model.depth={self.depth}), got {value}")
        return self


class TrainConfig(_Section):
    seed: int = 0
    batch_size: int = Field(16, ge=1)
    max_steps: Optional[int] = Field(3000, ge=1)
    max_minutes: Optional[float] = Field(None, gt=0)
    lr_g: float = Field(5e-4, gt=0)
    lr_d: float = Field(2e-4, gt=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    grad_clip: Optional[float] = Field(None, gt=0)
    # Both learning rates fall linearly to 0 over this share of max_steps at the
    # end (pix2pix's n_epochs_decay); 0 = constant. A function of (step,
    # max_steps), so a resumed run follows the same schedule.
    lr_decay: float = Field(0.5, ge=0, le=1)
    augmented_self_reference: bool = True
    random_crop: int = Field(0, ge=0)  # 0 = no crop; else crop size in pixels
    flip: bool = True
    shuffle_buffer: int = Field(256, ge=1)
    num_workers: int = Field(0, ge=0)
    amp: bool = True  # bf16 autocast on GPU and on CPUs with bf16 kernels (AVX512/AMX)
    compile: bool = False
    channels_last: bool = True
    nproc: int = Field(1, ge=1)
    log_every: int = Field(10, ge=1)
    # Reference-following curves: the first monitor_pairs toon benchmark pairs
    # scored every monitor_every steps (pipeline/train/monitor.py); 0 pairs = off.
    monitor_pairs: int = Field(16, ge=0)
    monitor_every: int = Field(100, ge=1)
    sample_every: int = Field(100, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _has_budget(self):
        if self.max_steps is None and self.max_minutes is None:
            raise ValueError("set max_steps or max_minutes (no budget means no end)")
        if self.lr_decay and self.max_steps is None:
            raise ValueError(f"lr_decay={self.lr_decay} needs max_steps: the decay ends there "
                             "(set lr_decay: 0 for a budget in minutes only)")
        if self.monitor_every % self.log_every:
            raise ValueError(f"monitor_every={self.monitor_every} must be a multiple of "
                             f"log_every={self.log_every} (the curves share the log's steps)")
        return self


class EvaluateConfig(_Section):
    seed: int = 10_000_000  # toon seeds from here on are never used by ingest
    pairs: int = Field(64, ge=1)
    hit_threshold: float = Field(10.0, gt=0)
    real_sketch_dir: Optional[str] = "../shared/samples/real/sketch"
    real_reference_dir: Optional[str] = "../shared/samples/real/color"
    # Official Style2paints V1 outputs with their inputs, painted again by ours side by side.
    v1_outputs_dir: Optional[str] = "../shared/samples/real/v1_outputs"
    # Hair/eye labels of the ingested pictures (CSV: file, hair, eyes): the labelled
    # reference-following benchmark (pipeline/evaluate/labelled.py); null = skipped.
    labels: Optional[str] = None
    labelled_pairs: int = Field(300, ge=1)
    batch_size: int = Field(16, ge=1)
    # Held-out rows scored for reconstruction (the test split can be large at scale).
    reconstruction_max_images: int = Field(512, ge=1)
    grid_rows: int = Field(8, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class Config(_Section):
    data: DataConfig = DataConfig()
    ingest: IngestConfig = IngestConfig()
    extract: ExtractConfig = ExtractConfig()
    featurize: FeaturizeConfig = FeaturizeConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    @model_validator(mode="before")
    @classmethod
    def _derive_style_dim(cls, raw):
        """model.style_dim follows featurize.code unless it is set explicitly."""
        if not isinstance(raw, dict):
            return raw
        featurize, model = raw.get("featurize") or {}, raw.get("model") or {}
        if not isinstance(featurize, dict) or not isinstance(model, dict):
            return raw
        if model.get("style_dim") is None:
            code = featurize.get("code", FeaturizeConfig.model_fields["code"].default)
            if code in STYLE_CODE_DIMS:
                raw = {**raw, "model": {**model, "style_dim": STYLE_CODE_DIMS[code]}}
        return raw

    @model_validator(mode="after")
    def _cross_checks(self):
        factor = 2 ** self.model.depth
        if self.data.resolution % factor:
            raise ValueError(
                f"data.resolution={self.data.resolution} must be a multiple of "
                f"2**model.depth={factor} (the U-net downsamples {self.model.depth} times)"
            )
        if self.train.random_crop and self.train.random_crop % factor:
            raise ValueError(
                f"train.random_crop={self.train.random_crop} must be a multiple of {factor}"
            )
        if self.train.random_crop > self.data.resolution:
            raise ValueError("train.random_crop must not exceed data.resolution")
        if self.ingest.source == "folder" and not self.ingest.folder:
            raise ValueError("ingest.folder must be set when ingest.source is 'folder'")
        if self.ingest.seed + self.ingest.toon_count > self.evaluate.seed:
            raise ValueError(
                "ingest.seed + ingest.toon_count must not reach evaluate.seed "
                "(benchmark characters must never appear in training)"
            )
        code_dim = STYLE_CODE_DIMS[self.featurize.code]
        if self.model.style_dim != code_dim:
            raise ValueError(f"model.style_dim={self.model.style_dim} does not match "
                             f"featurize.code={self.featurize.code} ({code_dim}-d); leave it unset")
        if self.featurize.code == "oracle_palette" and self.ingest.source != "toon":
            raise ValueError("featurize.code: oracle_palette needs toon data (ingest.source: "
                             "toon): only toons have a true palette")
        if self.train.random_crop and self.model.adversarial != "dcgan" and \
                self.model.adversarial_weight > 0:
            raise ValueError(
                "train.random_crop needs model.adversarial: dcgan or adversarial_weight: 0: "
                "D's target is V(y) of the whole image, which a crop no longer shows")
        if self.train.augmented_self_reference and self.featurize.augmented_copies < 1:
            raise ValueError(
                "train.augmented_self_reference needs featurize.augmented_copies >= 1"
            )
        return self

    @property
    def data_root(self) -> Path:
        return Path(self.data.root)

    @property
    def layout(self) -> Layout:
        """Where each output lives under data.root (pipeline/layout.py)."""
        return Layout(self.data.root)


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"].endswith("_type") or first["type"] == "finite_number":
        msg = f"{msg}, got {first['input']!r}"[:200]  # e.g. "should be a valid integer, got '64'"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    # Cross-section checks have no single location; their message names the keys.
    return f"{source}: {key}: {msg}{more}" if key else f"{source}: {msg}{more}"


def parse_config(raw: dict | None, source: str = "params.yaml") -> Config:
    try:
        return Config.model_validate(raw or {})
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_params_text(text: str, source: str = "params.yaml") -> Config:
    """Validate the text of a params file (see the module docstring for what is refused)."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        why = getattr(err, "problem", None) or str(err).splitlines()[0]
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}: not valid YAML ({why}{where})") from None
    if raw is None:
        raise ConfigError(f"{source}: empty file (restore it, e.g. git checkout params.yaml)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections")
    return parse_config(raw, source)


def load_config(path: str | Path = DEFAULT_PARAMS) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a params file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{path}: unreadable ({err.strerror or err})") from None
    return parse_params_text(text, str(path))
