"""One typed configuration for everything raynerf does.

A :class:`Config` holds five frozen sections (``model``, ``data``, ``train``,
``render``, ``eval``) whose defaults are the paper's values (Mip-NeRF 360,
multinerf's ``configs/360.gin``). A TOML file shipped in ``raynerf/configs/`` (or any
path) overrides some of them, and ``--set section.key=value`` overrides those. Every
value is checked here, when it is loaded: an unknown section or key, a value of the
wrong type, a choice outside its ``Literal`` or a number below its bound raises
:class:`~raynerf.errors.RaynerfError` naming the key (and the file).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import tomllib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

from raynerf.errors import RaynerfError

# The named configs ship inside the package (``raynerf/configs/NAME.toml``).
CONFIGS = importlib.resources.files("raynerf") / "configs"

Auto = Literal["auto"]  # "let the device or the machine choose"


def _at_least(minimum: int | float, default: Any) -> Any:
    """A dataclass field whose value must be >= ``minimum`` (checked at load)."""
    return dataclasses.field(default=default, metadata={"min": minimum})


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
    compute_dtype: Literal["float32", "bfloat16"] = "float32"  # bfloat16 matmuls on GPU/TPU


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which images, at which resolution, and how they are cached and fed."""

    factor: int = _at_least(1, 4)  # images_<factor>/; 1 means images/
    llffhold: int = _at_least(1, 8)  # every llffhold-th image (sorted by name) is a test image
    cache_dir: str = ""  # pixel cache; "" -> $RAYNERF_CACHE or ~/.cache/raynerf
    downsample_missing: bool = False  # build a missing images_<factor>/ from images/
    # The 360 frame's origin: "cameras" (their mean, as multinerf) or "focus" (where they look).
    recentre: Literal["focus", "cameras"] = "cameras"
    worker_count: int = _at_least(0, 0)  # grain worker processes (0: in the training process)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule, logging and checkpointing."""

    batch_size: int = _at_least(1, 16384)  # global rays per step, over all devices of all hosts
    # Micro-batches per step: the same result with ~1/M of the activation memory.
    # "auto" lets the device decide (see mesh.micro_batches): one pass on GPU/TPU,
    # passes of about 32 rays per device on the CPU, where that runs faster.
    grad_accum_steps: int | Auto = _at_least(1, "auto")
    max_steps: int = _at_least(1, 250000)
    lr_init: float = 2e-3
    lr_final: float = 2e-5
    lr_delay_steps: int = 512
    lr_delay_mult: float = 0.01
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-6
    grad_max_norm: float = 1e-3
    grad_clip_scope: Literal["global", "per_network"] = (
        "per_network"  # each MLP by its own norm (multinerf's), or by the "global" norm
    )
    charb_padding: float = 0.001
    data_loss_mult: float = 1.0
    interlevel_loss_mult: float = 1.0
    distortion_loss_mult: float = 0.01
    seed: int = 0
    log_every: int = _at_least(1, 100)
    render_every: int = _at_least(0, 5000)
    checkpoint_every: int = _at_least(1, 25000)
    keep_checkpoints: int = _at_least(1, 3)
    max_nonfinite_steps: int = _at_least(1, 10)  # consecutive skipped steps before rolling back


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Camera paths and videos."""

    frames: int = _at_least(1, 50)
    fps: int = _at_least(1, 5)
    z_variation: float = 0.0
    z_phase: float = 0.0
    chunk_size: int | Auto = _at_least(
        1, 8192
    )  # rays per render call (halved to fit free memory); "auto": the largest that fits
    workers: int | Auto = _at_least(1, "auto")  # Ray render workers; "auto": one per available device host


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Test-view evaluation."""

    chunk_size: int | Auto = _at_least(
        1, "auto"
    )  # rays per render call (halved to fit free memory); "auto": the largest that fits
    lpips_net: Literal["alex", "vgg", "none"] = "alex"


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

    def replace(self, overrides: Mapping[str, Mapping[str, Any]]) -> Config:
        """A copy with ``{section: {key: value}}`` applied, each value checked
        (:func:`check_value`)."""
        sections = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for section, values in overrides.items():
            if section not in sections:
                raise RaynerfError(f"unknown config section '{section}' (sections: {', '.join(sections)})")
            if not isinstance(values, Mapping):
                raise RaynerfError(f"config section '{section}' must be a table of keys")
            current = sections[section]
            fields = {f.name: f for f in dataclasses.fields(current)}
            hints = typing.get_type_hints(type(current))
            checked = {}
            for key, value in values.items():
                if key not in fields:
                    raise RaynerfError(
                        f"unknown config key '{section}.{key}' (keys of [{section}]: {', '.join(fields)})"
                    )
                checked[key] = check_value(
                    f"{section}.{key}", value, hints[key], fields[key].metadata.get("min")
                )
            sections[section] = dataclasses.replace(current, **checked)
        return Config(**sections)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def _options(expected: Any) -> tuple[Any, ...]:
    """The alternatives of a type: ``int | Literal["a", "b"]`` -> ``(int, "a", "b")``."""
    if typing.get_origin(expected) is Union:
        return tuple(o for arg in typing.get_args(expected) for o in _options(arg))
    if typing.get_origin(expected) is Literal:
        return typing.get_args(expected)
    return (expected,)


def _is_instance(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_value(name: str, value: Any, expected: Any, minimum: int | float | None = None) -> Any:
    """``value`` checked against the field's type (``int``, ``float``, ``bool``, ``str``,
    a ``Literal`` of choices, or a union of those) and lower bound; returns it (ints given
    for floats become floats; a legacy ``0`` for an ``"auto"`` setting reads as ``"auto"``)."""
    options = _options(expected)
    choices = [o for o in options if not isinstance(o, type)]
    kinds = [o for o in options if isinstance(o, type)]
    if "auto" in choices and value == 0 and not isinstance(value, bool):
        return "auto"  # how config.toml files written before "auto" spell it
    if value in choices and isinstance(value, str):
        return value
    kind = next((k for k in kinds if _is_instance(value, k)), None)
    if kind is None:
        wanted = " or ".join([k.__name__ for k in kinds] + [json.dumps(c) for c in choices])
        raise RaynerfError(f"config key '{name}' must be {wanted}, got {value!r}")
    if minimum is not None and value < minimum:
        raise RaynerfError(
            f"config key '{name}' must be at least {minimum}"
            + (" (must be positive)" if minimum == 1 else "")
            + f", got {value!r}"
            + (' (or "auto")' if "auto" in choices else "")
        )
    return float(value) if kind is float else value


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


def config_names() -> list[str]:
    """The configs shipped with raynerf, by name (``360``, ``tiny``)."""
    return sorted(p.name.removesuffix(".toml") for p in CONFIGS.iterdir() if p.name.endswith(".toml"))


def read_config_text(name_or_path: str) -> tuple[str, str]:
    """``(where, text)`` of a shipped config by name (``"tiny"``) or of a TOML file path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            return str(path), path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise RaynerfError(f"config file {path} cannot be read ({exc.__class__.__name__})") from None
    resource = CONFIGS / f"{name_or_path}.toml"
    if not resource.is_file():
        raise RaynerfError(
            f"no config named '{name_or_path}' (known: {', '.join(config_names())}; or give a .toml path)"
        )
    return f"raynerf/configs/{name_or_path}.toml", resource.read_text()


def load_config(name_or_path: str = "360", overrides: Sequence[str] = ()) -> Config:
    """The config from a named or given TOML file, with ``--set`` overrides applied."""
    where, text = read_config_text(name_or_path)
    try:
        config = Config().replace(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise RaynerfError(f"config file {where} is not valid TOML: {exc}") from None
    except RaynerfError as exc:
        raise RaynerfError(f"{exc} (in {where})") from None
    extra: dict[str, dict[str, Any]] = {}
    for text in overrides:
        section, key, value = parse_override(text)
        extra.setdefault(section, {})[key] = value
    return config.replace(extra)


def config_from_toml_text(text: str) -> Config:
    """Reads back what :meth:`Config.to_toml` wrote."""
    return Config().replace(tomllib.loads(text))
