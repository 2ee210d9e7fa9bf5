"""Stand-ins for meshes of devices this machine lacks: only what the planning
functions read (``mesh.devices``, each device's ``platform``)."""

import types

import numpy as np


def fake_mesh(platform: str, count: int):
    device = types.SimpleNamespace(platform=platform)
    return types.SimpleNamespace(devices=np.array([device] * count, dtype=object))
