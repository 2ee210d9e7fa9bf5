"""TPU slice names -> topology, hosts and the devices jax shows on the real slice."""

from __future__ import annotations

import collections

import pytest

from raynerf.distributed import slices
from raynerf.errors import RaynerfError

# What a real slice shows (Cloud TPU docs: hosts per slice; jax.devices() per host),
# written out by hand rather than derived from the catalog's own rules:
# name -> (jax topology name, hosts, devices per host, device_kind)
REAL = {
    "v2-8": ("v2:2x2", 1, 8, "TPU v2"),  # 4 chips, one device per TensorCore
    "v3-32": ("v3:4x4", 4, 8, "TPU v3"),
    "v4-8": ("v4:2x2x1", 1, 4, "TPU v4"),  # megacore: one device per chip
    "v4-32": ("v4:2x2x4", 4, 4, "TPU v4"),
    "v5p-8": ("v5p:2x2x1", 1, 4, "TPU v5"),
    "v5p-32": ("v5p:2x2x4", 4, 4, "TPU v5"),
    "v5litepod-1": ("v5e:1x1", 1, 1, "TPU v5 lite"),
    "v5litepod-8": ("v5e:2x4", 1, 8, "TPU v5 lite"),  # one host with 8 chips
    "v5litepod-16": ("v5e:4x4", 4, 4, "TPU v5 lite"),
    "v6e-4": ("v6e:2x2", 1, 4, "TPU v6 lite"),
    "v6e-8": ("v6e:2x4", 1, 8, "TPU v6 lite"),
    "v6e-16": ("v6e:4x4", 4, 4, "TPU v6 lite"),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_slice_layout(name):
    topology, hosts, per_host, _ = REAL[name]
    tpu_slice = slices.parse_slice(name)
    assert tpu_slice.topology_name == topology
    assert tpu_slice.hosts == hosts
    assert tpu_slice.devices == hosts * per_host


def test_unknown_slice_lists_the_known_ones():
    with pytest.raises(RaynerfError) as err:
        slices.parse_slice("v4-33")
    assert "v4-32" in str(err.value) and "v5litepod-16" in str(err.value)
    with pytest.raises(RaynerfError):
        slices.parse_slice("h200-8")


def test_every_known_slice_parses():
    for name in slices.known_slices():
        tpu_slice = slices.parse_slice(name)
        assert tpu_slice.hosts * tpu_slice.chips_per_host == tpu_slice.chips


needs_libtpu = pytest.mark.skipif(
    not slices.libtpu_installed(), reason="libtpu not installed (pip install 'raynerf[tpu]')"
)


@needs_libtpu
@pytest.mark.parametrize("name", sorted(REAL))
def test_topology_devices_match_the_real_slice(name):
    """libtpu's deviceless devices: as many, as spread over hosts and of the kind
    jax.devices() reports on the real slice."""
    _, hosts, per_host, kind = REAL[name]
    devices = slices.topology_devices(slices.parse_slice(name))
    per_process = collections.Counter(d.process_index for d in devices)
    assert sorted(per_process) == list(range(hosts))
    assert set(per_process.values()) == {per_host}
    assert {d.platform for d in devices} == {"tpu"}
    assert {d.device_kind for d in devices} == {kind}
    assert len({d.id for d in devices}) == len(devices)


def test_missing_libtpu_is_one_error(monkeypatch):
    monkeypatch.setattr(slices, "libtpu_installed", lambda: False)
    with pytest.raises(RaynerfError, match=r"pip install 'raynerf\[tpu\]'"):
        slices.topology_devices(slices.parse_slice("v4-8"))
