"""Scenes in, ray batches out: COLMAP loading, cameras, the pixel cache, the grain pipeline.

The light entry points are re-exported here; ``raynerf.data.cache`` (tensorstore)
and ``raynerf.data.pipeline`` (grain) are imported where they are used.
"""

from raynerf.data.cameras import Intrinsics, camera_rays, pixel_rays
from raynerf.data.scene import Scene, image_rays, load_scene

__all__ = ["Intrinsics", "Scene", "camera_rays", "image_rays", "load_scene", "pixel_rays"]
