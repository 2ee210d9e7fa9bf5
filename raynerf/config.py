"""One typed configuration for everything raynerf does.

A :class:`Config` holds five frozen sections (``model``, ``data``, ``train``,
``render``, ``eval``) whose defaults are the paper's values (Mip-NeRF 360,
multinerf's ``configs/360.gin``). A TOML file in ``configs/`` overrides some of
them, and ``--set section.key=value`` overrides those. An unknown section or key,
or a value of the wrong type, raises :class:`~raynerf.errors.RaynerfError`.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence

from raynerf.errors import RaynerfError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The Mip-NeRF 360 model: sampling, encodings and MLP shapes."""

    near: float = 0.2  # ray start, in normalised scene units
    far: float = 1e6  # ray end
    num_prop_samples: int = 64  # intervals per proposal level
    num_nerf_samples: int = 32  # intervals of the final (NeRF) level
    num_levels: int = 3  # proposal levels + 1
    dilation_bias: float = 0.0025
    dilation_multiplier: float = 0.5
    trim_dilated_ends: bool = True  # drop the outermost dilated intervals (as multinerf)
    anneal_slope: float = 10.0  # Schlick bias slope applied to the training fraction
    resample_padding: float = 0.0
    single_jitter: bool = True
    stop_level_grad: bool = True
    opaque_background: bool = True
    basis_subdivisions: int = 2  # icosahedron tessellation: 2 -> 21 directions
    min_deg_point: int = 0
    max_deg_point: int = 12  # exclusive: degrees 0..11
    deg_view: int = 4  # exclusive: view-direction degrees 0..3, identity appended
    prop_net_depth: int = 4
    prop_net_width: int = 256
    nerf_net_depth: int = 8
    nerf_net_width: int = 1024
    skip_layer: int = 4  # concatenate the input after this layer
    bottleneck_width: int = 256
    viewdir_net_depth: int = 1
    viewdir_net_width: int = 128
    density_bias: float = -1.0
    rgb_padding: float = 0.001
    compute_dtype: str = "float32"  # "bfloat16" for matmuls on GPU/TPU


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which images, at which resolution, and how they are cached and fed."""

    factor: int = 4  # images_<factor>/; 1 means images/
    llffhold: int = 8  # every llffhold-th image (sorted by name) is a test image
    cache_dir: str = ""  # pixel cache; "" -> $RAYNERF_CACHE or ~/.cache/raynerf
    downsample_missing: bool = False  # build a missing images_<factor>/ from images/
    recentre: str = "focus"  # 360 frame origin: "focus" (where the cameras look) or "cameras" (their mean)
    worker_count: int = 0  # grain worker processes (0: in the training process)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule, logging and checkpointing."""

    batch_size: int = 16384  # global rays per step, over all devices of all hosts
    # Micro-batches per step: the same result with ~1/M of the activation memory.
    # 0 lets the device decide (see training.step.micro_batches): one pass on GPU/TPU,
    # passes of about 32 rays per device on the CPU, where that runs faster.
    grad_accum_steps: int = 0
    max_steps: int = 250000
    lr_init: float = 2e-3
    lr_final: float = 2e-5
    lr_delay_steps: int = 512
    lr_delay_mult: float = 0.01
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-6
    grad_max_norm: float = 1e-3
    grad_clip_scope: str = "global"  # "global" norm, or "per_network" (each MLP apart)
    charb_padding: float = 0.001
    data_loss_mult: float = 1.0
    interlevel_loss_mult: float = 1.0
    distortion_loss_mult: float = 0.01
    seed: int = 0
    log_every: int = 100
    render_every: int = 5000
    checkpoint_every: int = 25000
    keep_checkpoints: int = 3
    max_nonfinite_steps: int = 10  # consecutive skipped steps before rolling back


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Camera paths and videos."""

    frames: int = 50
    fps: int = 5
    z_variation: float = 0.0
    z_phase: float = 0.0
    chunk_size: int = 8192  # rays per render call (halved to fit free memory); 0 -> the largest that fits
    workers: int = 0  # Ray render workers; 0 -> one per available device host


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Test-view evaluation."""

    chunk_size: int = 0  # rays per render call (halved to fit free memory); 0 -> the largest that fits
    lpips_net: str = "alex"  # "alex", "vgg" or "none"


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    render: RenderConfig = RenderConfig()
    eval: EvalConfig = EvalConfig()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The full resolved config as TOML text (every key, every section)."""
        lines: list[str] = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            for key, value in values.items():
                lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
        return "\n".join(lines)

    def replace(self, overrides: Mapping[str, Mapping[str, Any]]) -> "Config":
        """A copy with ``{section: {key: value}}`` applied, each value type-checked."""
        sections = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for section, values in overrides.items():
            if section not in sections:
                raise RaynerfError(
                    f"unknown config section '{section}' (sections: {', '.join(sections)})"
                )
            if not isinstance(values, Mapping):
                raise RaynerfError(f"config section '{section}' must be a table of keys")
            current = sections[section]
            hints = typing.get_type_hints(type(current))
            checked = {}
            for key, value in values.items():
                if key not in hints:
                    known = ", ".join(f.name for f in dataclasses.fields(current))
                    raise RaynerfError(
                        f"unknown config key '{section}.{key}' (keys of [{section}]: {known})"
                    )
                checked[key] = _check_type(f"{section}.{key}", value, hints[key])
            sections[section] = dataclasses.replace(current, **checked)
        return Config(**sections)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def _check_type(name: str, value: Any, expected: type) -> Any:
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise RaynerfError(
            f"config key '{name}' must be {expected.__name__}, got {value!r}"
        )
    return value


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"train.batch_size=1024"`` -> ``("train", "batch_size", 1024)``.

    The value is read as a TOML value (``1e-3``, ``true``, ``"alex"``); a bare word
    that is not valid TOML is taken as a string.
    """
    if "=" not in text:
        raise RaynerfError(f"--set needs section.key=value, got '{text}'")
    name, raw = text.split("=", 1)
    if name.count(".") != 1:
        raise RaynerfError(f"--set needs section.key=value, got '{text}'")
    section, key = name.strip().split(".")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


def resolve_config_path(name_or_path: str) -> Path:
    """``"tiny"`` -> ``configs/tiny.toml``; an existing path is used as it is."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise RaynerfError(f"config file {path} does not exist")
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.toml"
    if not candidate.is_file():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
        raise RaynerfError(
            f"no config named '{name_or_path}' (known: {', '.join(names)}; or give a .toml path)"
        )
    return candidate


def load_config(name_or_path: str = "360", overrides: Sequence[str] = ()) -> Config:
    """The config from a named or given TOML file, with ``--set`` overrides applied."""
    path = resolve_config_path(name_or_path)
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RaynerfError(f"config file {path} is not valid TOML: {exc}") from None
    config = Config().replace(table)
    extra: dict[str, dict[str, Any]] = {}
    for text in overrides:
        section, key, value = parse_override(text)
        extra.setdefault(section, {})[key] = value
    return config.replace(extra)


def config_from_toml_text(text: str) -> Config:
    """Reads back what :meth:`Config.to_toml` wrote."""
    return Config().replace(tomllib.loads(text))
