"""The typed config: defaults are the paper's, files and overrides apply, bad keys fail."""

import dataclasses

import pytest

from raynerf.config import config_from_toml_text, config_names, load_config, parse_override, read_config_text
from raynerf.errors import RaynerfError


def test_paper_defaults():
    config = load_config("360")
    assert config.model.num_prop_samples == 64 and config.model.num_nerf_samples == 32
    assert config.model.nerf_net_depth == 8 and config.model.nerf_net_width == 1024
    assert config.train.batch_size == 16384 and config.train.max_steps == 250000
    assert config.train.lr_init == 2e-3 and config.train.lr_final == 2e-5
    assert config.data.factor == 4


def test_tiny_changes_only_the_mlps_batch_and_factor():
    paper, tiny = load_config("360"), load_config("tiny")
    assert (tiny.model.nerf_net_depth, tiny.model.nerf_net_width) == (4, 128)
    assert (tiny.model.prop_net_depth, tiny.model.prop_net_width) == (4, 64)
    assert tiny.train.batch_size == 1024 and tiny.data.factor == 8
    changed = {
        f.name
        for f in dataclasses.fields(paper.model)
        if getattr(paper.model, f.name) != getattr(tiny.model, f.name)
    }
    assert changed == {"nerf_net_depth", "nerf_net_width", "prop_net_width"}  # prop depth is 4 in both


def test_overrides_are_typed():
    config = load_config(
        "tiny",
        [
            "train.batch_size=256",
            "train.lr_init=1e-3",
            "model.single_jitter=false",
            "eval.lpips_net=vgg",
            "model.near=1",
        ],
    )
    assert config.train.batch_size == 256
    assert config.train.lr_init == 1e-3
    assert config.model.single_jitter is False
    assert config.eval.lpips_net == "vgg"
    assert config.model.near == 1.0 and isinstance(config.model.near, float)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batchsize=3", "unknown config key 'train.batchsize'"),
        ("trainer.batch_size=3", "unknown config section 'trainer'"),
        ("train.batch_size=1.5", "must be int"),
        ("train.batch_size=many", "must be int"),
        ("model.single_jitter=1", "must be bool"),
        ("train.batch_size", "section.key=value"),
        ("train.batch_size=0", "'train.batch_size' must be at least 1 \\(must be positive\\), got 0"),
        ("train.batch_size=-8", "must be positive"),
        ("data.factor=0", "'data.factor' must be at least 1"),
        ("data.recentre=middle", "'data.recentre' must be .*\"focus\" or \"cameras\", got 'middle'"),
        ("train.grad_clip_scope=layer", '\'train.grad_clip_scope\' must be .*"global" or "per_network"'),
        ("model.compute_dtype=float16", "'model.compute_dtype' must be .*\"bfloat16\""),
        ("eval.lpips_net=squeeze", '\'eval.lpips_net\' must be .*"alex" or "vgg" or "none"'),
        ("train.grad_accum_steps=sometimes", "'train.grad_accum_steps' must be int or \"auto\""),
        ("train.grad_accum_steps=-1", 'must be positive.*or "auto"'),
    ],
)
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(RaynerfError, match=message):
        load_config("360", [override])


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("[model]\nnerf_width = 12\n")
    with pytest.raises(RaynerfError, match="unknown config key 'model.nerf_width'"):
        load_config(str(path))


def test_auto_settings_take_auto_or_a_count():
    config = load_config("tiny", ["train.grad_accum_steps=4", "render.workers=auto"])
    assert config.train.grad_accum_steps == 4 and config.render.workers == "auto"
    assert load_config("tiny").train.grad_accum_steps == "auto"
    # config.toml files written when 0 meant "let the device choose" still read back
    assert config_from_toml_text("[train]\ngrad_accum_steps = 0\n").train.grad_accum_steps == "auto"


def test_a_bad_value_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[train]\nbatch_size = "big"\n')
    with pytest.raises(RaynerfError, match=f"'train.batch_size' must be int.*in {path}"):
        load_config(str(path))


def test_shipped_configs_open_with_their_command_and_expected_result():
    for name in config_names():
        _, text = read_config_text(name)
        header = text.split("\n[")[0]
        assert "raynerf " in header and "Expected" in header, name


def test_unknown_config_name():
    with pytest.raises(RaynerfError, match="no config named 'huge'"):
        load_config("huge")


def test_toml_round_trip():
    config = load_config("tiny", ["render.fps=7", "data.cache_dir=/x y"])
    assert config_from_toml_text(config.to_toml()) == config
    assert parse_override("data.cache_dir=/tmp/c") == ("data", "cache_dir", "/tmp/c")
