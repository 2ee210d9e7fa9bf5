"""``cluster/tpu.yaml`` read the way ``ray up`` reads it (Ray's own ``prepare_config`` and
schema validation), and checked for what would break a TPU user's first ``ray up``:
the Python the setup makes, the head's Google API client, the dashboard's address,
the head's CPUs, the Ray version, no shared-disk assumption."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_FILE = ROOT / "cluster" / "tpu.yaml"
VENV_PYTHON = "~/venv/bin/python"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def prepared() -> dict:
    from ray.autoscaler._private.util import prepare_config

    return prepare_config(yaml.safe_load(CLUSTER_FILE.read_text()))


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def words(command: str) -> list[str]:
    """A setup command's words, across ``;`` and ``&&``."""
    return shlex.split(command.replace(";", " ; ").replace("&&", " && "))


def installs(commands: list[str]) -> dict[str, Requirement]:
    """``name -> requirement`` for everything ``uv pip install --python ~/venv/bin/python``
    installs in ``commands`` (the editable checkout excluded)."""
    found = {}
    for command in commands:
        w = words(command)
        if w[:3] != ["~/.local/bin/uv", "pip", "install"]:
            continue
        assert w[w.index("--python") + 1] == VENV_PYTHON, command
        for arg in w[3:]:
            if arg.startswith("-") or arg.startswith("~") or arg == VENV_PYTHON:
                continue
            req = Requirement(arg)
            found[req.name] = req
    return found


def option(w: list[str], name: str) -> str | None:
    for i, arg in enumerate(w):
        if arg == name:
            return w[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def test_cluster_file_passes_rays_validation():
    from ray.autoscaler._private.util import validate_config

    config = prepared()
    validate_config(config)
    assert config["provider"]["type"] == "gcp"
    tpu = [t for t in config["available_node_types"].values() if "acceleratorType" in t["node_config"]]
    assert len(tpu) == 1 and tpu[0]["node_config"]["runtimeVersion"]
    assert config["head_node_type"] not in [
        name for name, t in config["available_node_types"].items() if "acceleratorType" in t["node_config"]
    ]


def test_cluster_validation_rejects_a_broken_file():
    """The validator is not a rubber stamp: a misspelt key fails it."""
    from ray.autoscaler._private.util import validate_config

    config = prepared()
    config["available_node_types"]["ray_head_default"]["min_wrokers"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate_config(config)


def test_setup_makes_a_python_that_raynerf_supports():
    """Every node runs ``setup_commands``: they make ~/venv with a Python that satisfies
    ``requires-python`` (the images' own 3.10 does not), and everything after runs in it."""
    config = prepared()
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    venvs = [words(c) for c in config["setup_commands"] if "venv" in words(c)[:2]]
    assert len(venvs) == 1, config["setup_commands"]
    w = venvs[0]
    assert w[-1] == "~/venv"
    python = option(w, "--python")
    assert python is not None and Version(python) in requires, (python, str(requires))
    assert Version("3.10") not in requires  # what ubuntu-2204-lts and tpu-ubuntu2204-base ship
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert installs(config[key]), key  # every install goes into ~/venv (checked in installs)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray" in c]
        assert starts and all("~/venv/bin/ray " in c for c in starts), config[key]


def test_raynerf_is_installed_everywhere_with_tpu_extras_on_workers():
    config = prepared()
    assert any("-e ~/raynerf" in c and "[tpu]" not in c for c in config["head_setup_commands"])
    assert any("-e ~/raynerf'[tpu]'" in c for c in config["worker_setup_commands"])


def test_head_installs_the_gcp_client_the_autoscaler_imports():
    """Ray's GCP provider (run by the autoscaler on the head) imports googleapiclient and
    google_auth_httplib2; the head must install them into the venv its Ray runs from."""
    from ray.autoscaler._private.util import prepare_config  # noqa: F401 - Ray is importable

    config = prepared()
    head = installs(config["head_setup_commands"])
    assert "google-api-python-client" in head and "google-auth-httplib2" in head
    assert "google-api-python-client" not in installs(config["worker_setup_commands"])


def test_ray_is_pinned_to_the_tested_version_on_every_node():
    """The pin is the Ray CI tests with (.ci/constraints.txt), inside pyproject's range."""
    config = prepared()
    tested = next(
        line.split("==")[1].strip()
        for line in (ROOT / ".ci" / "constraints.txt").read_text().splitlines()
        if line.startswith("ray==")
    )
    allowed = next(Requirement(d) for d in pyproject()["project"]["dependencies"] if d.startswith("ray["))
    for key in ("head_setup_commands", "worker_setup_commands"):
        ray_req = installs(config[key])["ray"]
        assert str(ray_req.specifier) == f"=={tested}", (key, str(ray_req))
        assert Version(tested) in allowed.specifier
        assert {"default", "train"} <= ray_req.extras


def test_dashboard_is_not_public_and_the_head_takes_no_work():
    config = prepared()
    heads = [words(c) for c in config["head_start_ray_commands"] if "--head" in c]
    assert len(heads) == 1
    host = option(heads[0], "--dashboard-host")
    assert host is None or host in LOOPBACK, host  # Ray's own default is localhost
    head_type = config["available_node_types"][config["head_node_type"]]
    assert head_type["resources"].get("CPU") == 0


def test_no_shared_disk_is_assumed():
    """Nothing in the file mounts /mnt/shared, so nothing may assume it."""
    text = CLUSTER_FILE.read_text()
    assert "/mnt/shared" not in text
    assert not any(k.startswith("/mnt") for k in prepared().get("file_mounts", {}))
