"""The viewer's web side: viser's page, a render thread per browser tab, the training
cameras, the camera-path editor and a follower of a run that is still training.

Poses cross between raynerf and viser unchanged: both use camera-to-world poses with
OpenCV camera axes (x right, y down, z forward), here in the run's normalised scene
frame; viser gives a pose as a quaternion ``wxyz`` and a ``position``.

A tab's thread renders a coarse frame as soon as its camera moves (sized to take
:data:`~raynerf.view.frames.MOVING_SECONDS` on this device) and, once the camera has
rested for :data:`REST_SECONDS`, a sharper one (up to
:data:`~raynerf.view.frames.RESTING_SECONDS`), abandoned as soon as the camera moves
again. Frames are serialised over the one device by :class:`~raynerf.view.frames.FrameRenderer`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import viser
import viser.transforms as vtf
from etils import epath
from PIL import Image

from raynerf.data.scene import Scene
from raynerf.errors import RaynerfError
from raynerf.render import paths
from raynerf.view.frames import (
    MOVING_SECONDS,
    OUTPUT_KINDS,
    RESTING_SECONDS,
    FrameRenderer,
    as_image,
    image_size,
    pixels_for,
    view_intrinsics,
)

# The camera counts as resting once it has not moved for this long (seconds).
REST_SECONDS = 0.3
# How often a followed run's checkpoint folder is looked at (seconds).
FOLLOW_SECONDS = 10.0
THUMBNAIL_WIDTH = 96
# Frustum size, and how far behind a camera a new tab starts, as fractions of the spread
# of the camera centres (:func:`camera_spread`).
FRUSTUM_SCALE, START_BACK = 0.02, 0.5
TRAIN_COLOUR, TEST_COLOUR, KEYFRAME_COLOUR = (40, 90, 200), (200, 60, 60), (240, 150, 20)

# ``newest(step)``: the trained parameters of a checkpoint newer than ``step``, as
# ``(step, params)``, or None when there is none.
NewestCheckpoint = Callable[[int], "tuple[int, Any] | None"]


def pose_from_viser(wxyz: Sequence[float], position: Sequence[float]) -> np.ndarray:
    """A viser camera (quaternion ``wxyz`` [4], ``position`` [3]) -> camtoworld [3, 4]."""
    rotation = vtf.SO3(np.asarray(wxyz, np.float64)).as_matrix()
    return np.concatenate([rotation, np.asarray(position, np.float64)[:, None]], axis=1)


def viser_from_pose(camtoworld: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """camtoworld [3, 4] -> (``wxyz`` [4], ``position`` [3]) for viser."""
    camtoworld = np.asarray(camtoworld, np.float64)
    return vtf.SO3.from_matrix(camtoworld[:, :3]).wxyz, camtoworld[:, 3].copy()


def vertical_fov(height: float, fy: float) -> float:
    """The vertical field of view (radians) of a pinhole ``height`` pixels tall."""
    return 2.0 * float(np.arctan2(0.5 * height, fy))


def camera_spread(camtoworlds: np.ndarray) -> float:
    """The median distance of the camera centres from their mean: [N, 3, 4] -> scalar
    (1 for a single camera)."""
    centres = camtoworlds[:, :, 3]
    spread = float(np.median(np.linalg.norm(centres - centres.mean(axis=0), axis=1)))
    return spread if spread > 0 else 1.0


def start_pose(camtoworlds: np.ndarray, index: int) -> np.ndarray:
    """Where a new tab's camera starts: camera ``index`` [3, 4] of ``camtoworlds``
    [N, 3, 4], stepped back along its viewing axis by :data:`START_BACK` of the cameras'
    spread, so that its own frustum does not fill the view."""
    pose = np.array(camtoworlds[index], np.float64)
    pose[:, 3] -= START_BACK * camera_spread(camtoworlds) * pose[:, 2]
    return pose


@dataclasses.dataclass(frozen=True)
class Keyframe:
    """A view kept for the camera path: ``camtoworld`` [3, 4] and vertical ``fov`` (radians)."""

    camtoworld: np.ndarray
    fov: float


def path_from_keyframes(
    keyframes: Sequence[Keyframe], frames: int, size: tuple[int, int], loop: bool
) -> tuple[np.ndarray, dict]:
    """The camera path through ``keyframes`` and its intrinsics, as ``raynerf render`` reads
    them: (camtoworlds [frames, 3, 4], {width, height, fx, fy, cx, cy}) for images of
    ``size`` = (width, height) at the keyframes' mean field of view."""
    if len(keyframes) < (3 if loop else 2):
        raise RaynerfError(f"a {'looping ' if loop else ''}path needs at least {3 if loop else 2} keyframes")
    poses = np.stack([key.camtoworld for key in keyframes])
    path = paths.spline_path(poses, range(len(poses)), frames, closed=loop)
    width, height = size
    fx, fy, cx, cy = view_intrinsics(float(np.mean([key.fov for key in keyframes])), width, height)[:4]
    return path, {"width": width, "height": height, "fx": fx, "fy": fy, "cx": cx, "cy": cy}


class ClientView:
    """One browser tab: renders its camera whenever it moves, then sharper at rest."""

    def __init__(self, client: viser.ClientHandle, viewer: Viewer):
        self.client = client
        self.viewer = viewer
        self.version = 0  # bumped by every change that calls for a new frame
        self.changed_at = time.monotonic()
        self.connected_at = time.monotonic()
        self.first_image_seconds: float | None = None
        self.frames_sent = 0
        self.last_image: np.ndarray | None = None  # uint8 [H, W, 3], the frame on the page
        self.sharp_shown = False  # whether it is the sharper frame of the camera at rest
        self._wake = threading.Event()
        self._closed = False
        client.camera.on_update(lambda _camera: self.touch())
        self._thread = threading.Thread(
            target=self._loop, name=f"raynerf-view-{client.client_id}", daemon=True
        )
        self._thread.start()

    def touch(self) -> None:
        """Asks for a new frame (the camera, the output kind or the parameters changed)."""
        self.version += 1
        self.changed_at = time.monotonic()
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def _loop(self) -> None:
        shown = (-1, False)  # (version, sharp) of the frame on the page
        while not self._closed:
            self._wake.wait(0.1)
            self._wake.clear()
            version = self.version
            resting = time.monotonic() - self.changed_at >= REST_SECONDS
            if shown == (version, True) or (shown == (version, False) and not resting):
                continue
            sharp = shown[0] == version
            try:
                image = self.viewer.frame(
                    self.client.camera, sharp, abandon=lambda v=version: self._closed or self.version != v
                )
            except Exception as exc:  # noqa: BLE001 - a tab's failure is shown there, not raised
                self.client.add_notification("Rendering failed", str(exc), color="red")
                shown = (version, True)
                continue
            if image is None:
                continue
            self.client.scene.set_background_image(image, format="jpeg", jpeg_quality=90)
            self.last_image, self.sharp_shown = image, sharp
            self.frames_sent += 1
            if self.first_image_seconds is None:
                self.first_image_seconds = time.monotonic() - self.connected_at
            shown = (version, sharp)


class Viewer:
    """The viewer of one trained run, served on ``http://host:port``.

    Args:
      renderer: renders frames with the run's parameters (already warmed up).
      scene: the run's scene, for its cameras (drawn with their images) and views.
      step: the step of the parameters in ``renderer``.
      path_file: where "Save path" writes the camera path JSON (editable on the page).
      path_size: (width, height) of the saved path's images.
      frames: frames of the saved path [default on the page].
      newest: when given, polled every ``follow_seconds`` for a newer checkpoint.
    """

    def __init__(
        self,
        renderer: FrameRenderer,
        scene: Scene,
        step: int,
        *,
        path_file: Path,
        path_size: tuple[int, int],
        frames: int = 50,
        newest: NewestCheckpoint | None = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        follow_seconds: float = FOLLOW_SECONDS,
        max_height: int = 720,
    ):
        self.renderer = renderer
        self.scene = scene
        self.step = step
        self.path_size = path_size
        self.keyframes: list[Keyframe] = []
        self.views: dict[int, ClientView] = {}
        self._newest = newest
        self._stopped = threading.Event()
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        self._build_gui(Path(path_file), frames, max_height)
        self.server.on_client_connect(self._connected)
        self.server.on_client_disconnect(self._disconnected)
        self._threads = [
            threading.Thread(target=self._draw_cameras, name="raynerf-view-cameras", daemon=True)
        ]
        if newest is not None:
            self._threads.append(
                threading.Thread(
                    target=self._follow, args=(follow_seconds,), name="raynerf-view-follow", daemon=True
                )
            )
        for thread in self._threads:
            thread.start()

    @property
    def url(self) -> str:
        host = self.server.get_host()
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{shown}:{self.server.get_port()}"

    def close(self) -> None:
        self._stopped.set()
        for view in list(self.views.values()):
            view.close()
        self.server.stop()

    # --- frames -------------------------------------------------------------------

    def frame(
        self, camera: viser.CameraHandle, sharp: bool, abandon: Callable[[], bool]
    ) -> np.ndarray | None:
        """The image a tab's ``camera`` sees: uint8 [H, W, 3], or None if abandoned."""
        seconds = RESTING_SECONDS if sharp else MOVING_SECONDS
        pixels = pixels_for(seconds, self.renderer.rays_per_second or 1e4)
        width, height = image_size(float(camera.aspect), pixels, int(self.max_height.value))
        pose = pose_from_viser(camera.wxyz, camera.position)
        intrinsics = view_intrinsics(float(camera.fov), width, height)
        outputs = self.renderer.render(pose, intrinsics, width, height, abandon)
        return None if outputs is None else as_image(outputs, self.output.value)

    def _connected(self, client: viser.ClientHandle) -> None:
        index = int(self.scene.test_indices[0]) if len(self.scene.test_indices) else 0
        camera = self.scene.cameras[index]
        wxyz, position = viser_from_pose(start_pose(self.scene.camtoworlds, index))
        with client.atomic():
            client.camera.up_direction = paths.world_up(self.scene.camtoworlds)
            client.camera.wxyz = wxyz
            client.camera.position = position
            client.camera.fov = vertical_fov(camera.height, camera.fy)
        self.views[client.client_id] = ClientView(client, self)

    def _disconnected(self, client: viser.ClientHandle) -> None:
        view = self.views.pop(client.client_id, None)
        if view is not None:
            view.close()

    def _refresh(self) -> None:
        for view in list(self.views.values()):
            view.touch()

    # --- the page -----------------------------------------------------------------

    def _build_gui(self, path_file: Path, frames: int, max_height: int) -> None:
        gui = self.server.gui
        self.status = gui.add_markdown(self._status_text())
        self.output = gui.add_dropdown("Output", OUTPUT_KINDS, initial_value="colour")
        self.output.on_update(lambda _event: self._refresh())
        self.max_height = gui.add_slider("Max height (px)", 32, 2160, 8, max_height)
        self.max_height.on_update(lambda _event: self._refresh())
        self.show_cameras = gui.add_checkbox("Show cameras", True)
        self.show_cameras.on_update(lambda _event: self._set_cameras_visible(self.show_cameras.value))
        with gui.add_folder("Camera path"):
            self.path_status = gui.add_markdown("No keyframes yet: move to a view and add it.")
            gui.add_button("Add keyframe").on_click(self._add_keyframe)
            gui.add_button("Remove last keyframe").on_click(
                lambda _event: self._set_keyframes(self.keyframes[:-1])
            )
            gui.add_button("Clear keyframes").on_click(lambda _event: self._set_keyframes([]))
            self.path_frames = gui.add_number("Frames", frames, min=2, max=100_000, step=1)
            self.path_fps = gui.add_number("Preview fps", 10.0, min=0.5, max=60.0, step=0.5)
            self.path_loop = gui.add_checkbox("Loop", False)
            gui.add_button("Preview").on_click(self._preview)
            self.path_file = gui.add_text("Path file", str(path_file))
            gui.add_button("Save path").on_click(self._save_path)
        self._camera_handles: list = []
        self._path_handles: list = []

    def _status_text(self) -> str:
        following = " (following the run)" if self._newest is not None else ""
        return f"**{self.scene.path.name}**, step {self.step}{following}"

    def _set_cameras_visible(self, visible: bool) -> None:
        for handle in self._camera_handles:
            handle.visible = visible

    def _draw_cameras(self) -> None:
        """The scene's cameras as frustums with their images (train blue, test red)."""
        scale = FRUSTUM_SCALE * camera_spread(self.scene.camtoworlds)
        test = set(int(i) for i in self.scene.test_indices)
        for i, camera in enumerate(self.scene.cameras):
            if self._stopped.is_set():
                return
            wxyz, position = viser_from_pose(self.scene.camtoworlds[i])
            handle = self.server.scene.add_camera_frustum(
                f"/cameras/{'test' if i in test else 'train'}/{i:05d}",
                fov=vertical_fov(camera.height, camera.fy),
                aspect=camera.width / camera.height,
                scale=scale,
                thickness=1.5,
                thickness_units="screen",
                color=TEST_COLOUR if i in test else TRAIN_COLOUR,
                image=_thumbnail(self.scene, i),
                format="jpeg",
                wxyz=wxyz,
                position=position,
                visible=bool(self.show_cameras.value),
            )
            self._camera_handles.append(handle)

    # --- the camera path ----------------------------------------------------------

    def _add_keyframe(self, event: viser.GuiEvent) -> None:
        if event.client is None:
            return
        camera = event.client.camera
        key = Keyframe(pose_from_viser(camera.wxyz, camera.position), float(camera.fov))
        self._set_keyframes([*self.keyframes, key])

    def _set_keyframes(self, keyframes: list[Keyframe]) -> None:
        self.keyframes = keyframes
        scene = self.server.scene
        for handle in self._path_handles:
            handle.remove()
        self._path_handles = []
        for k, key in enumerate(keyframes):
            wxyz, position = viser_from_pose(key.camtoworld)
            handle = scene.add_camera_frustum(
                f"/path/keyframe_{k:03d}",
                fov=key.fov,
                aspect=self.path_size[0] / self.path_size[1],
                scale=2 * FRUSTUM_SCALE * camera_spread(self.scene.camtoworlds),
                thickness=2.0,
                thickness_units="screen",
                color=KEYFRAME_COLOUR,
                wxyz=wxyz,
                position=position,
            )
            self._path_handles.append(handle)
        if len(keyframes) >= 2:
            loop = bool(self.path_loop.value) and len(keyframes) >= 3
            path, _ = path_from_keyframes(keyframes, 20 * len(keyframes), self.path_size, loop)
            handle = scene.add_spline_catmull_rom(
                "/path/spline",
                points=path[:, :, 3],
                closed=loop,
                color=KEYFRAME_COLOUR,
                thickness=2.0,
                thickness_units="screen",
            )
            self._path_handles.append(handle)
        self.path_status.content = f"{len(keyframes)} keyframe(s)."

    def _path(self) -> tuple[np.ndarray, dict]:
        loop = bool(self.path_loop.value)
        return path_from_keyframes(self.keyframes, int(self.path_frames.value), self.path_size, loop)

    def _preview(self, event: viser.GuiEvent) -> None:
        """Moves the tab's camera along the path at the preview rate."""
        client = event.client
        if client is None:
            return
        try:
            path, intrinsics = self._path()
        except RaynerfError as exc:
            client.add_notification("No path to preview", str(exc), auto_close_seconds=5.0)
            return
        fov = vertical_fov(intrinsics["height"], intrinsics["fy"])
        for pose in path:
            wxyz, position = viser_from_pose(pose)
            with client.atomic():
                client.camera.fov = fov
                client.camera.wxyz = wxyz
                client.camera.position = position
            time.sleep(1.0 / float(self.path_fps.value))

    def _save_path(self, event: viser.GuiEvent) -> None:
        target = Path(self.path_file.value).expanduser()
        try:
            path, intrinsics = self._path()
            target.parent.mkdir(parents=True, exist_ok=True)
            paths.save_path_json(target, path, intrinsics)
        except (RaynerfError, OSError) as exc:
            message, ok = f"Path not saved: {exc}", False
        else:
            message, ok = (
                f"Saved {len(path)} frames to {target}; render them with `raynerf render --path {target}`",
                True,
            )
        self.path_status.content = message
        if event.client is not None:
            event.client.add_notification(
                "Path saved" if ok else "Path not saved",
                message,
                auto_close_seconds=8.0,
                color=None if ok else "red",
            )

    # --- following a training run -------------------------------------------------

    def _follow(self, every: float) -> None:
        while not self._stopped.wait(every):
            try:
                found = self._newest(self.step) if self._newest is not None else None
            except RaynerfError:
                continue  # (a checkpoint being written, or moved aside: try again later)
            if found is None:
                continue
            self.step, params = found
            self.renderer.set_params(params)
            self.status.content = self._status_text()
            self._refresh()


def finished_steps(checkpoint_dir: epath.PathLike) -> list[int]:
    """The steps of the finished checkpoints in ``checkpoint_dir`` (orbax's folders named
    by their step; one being written, or moved aside, has a longer name), ascending."""
    try:
        names = [entry.name for entry in epath.Path(checkpoint_dir).iterdir() if entry.is_dir()]
    except OSError:
        return []
    return sorted(int(name) for name in names if name.isdigit())


def newest_checkpoint(
    checkpoint_dir: epath.PathLike, load: Callable[[], tuple[int, Any]]
) -> NewestCheckpoint:
    """A :data:`NewestCheckpoint` that looks at the folder's names and calls ``load()``
    (which restores the newest checkpoint that restores) only when a newer step is there."""

    def newest(step: int) -> tuple[int, Any] | None:
        steps = finished_steps(checkpoint_dir)
        if not steps or steps[-1] <= step:
            return None
        found = load()
        return found if found[0] > step else None

    return newest


def _thumbnail(scene: Scene, index: int) -> np.ndarray | None:
    """Image ``index`` of the scene, about :data:`THUMBNAIL_WIDTH` wide: uint8 [h, w, 3]."""
    try:
        with Image.open(scene.image_path(index)) as image:
            image = image.convert("RGB")
            height = max(1, round(image.height * THUMBNAIL_WIDTH / image.width))
            return np.asarray(image.resize((THUMBNAIL_WIDTH, height), Image.Resampling.BILINEAR))
    except OSError:
        return None
