"""``raynerf view`` in a real browser: headless Chromium opens the page, shows the rendered
scene, follows a drag of the camera, and saves a camera path made with the page's
buttons that ``raynerf render`` reads. Skips where Chromium, its driver or selenium is
not installed (Debian: ``apt-get install chromium chromium-driver``).

Set ``RAYNERF_SCREENSHOTS=DIR`` to keep the screenshots.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raynerf.data.scene import load_configured_scene
from raynerf.mesh import make_mesh
from raynerf.render import paths
from raynerf.training.checkpoints import load_trained_params
from raynerf.view.frames import FrameRenderer
from raynerf.view.server import Viewer, pose_from_viser

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
WINDOW = (900, 700)
# Where the screenshots are compared: the canvas clear of viser's control panel (right),
# its notice of software WebGL (top left) and its axes (bottom left).
SCENE_BOX = (80, 160, 540, 480)


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("no Chromium and chromedriver here (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # (root in CI)
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--enable-unsafe-swiftshader",  # WebGL on the CPU
        "--use-angle=swiftshader",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.1)


def _screenshot(driver, path: Path) -> np.ndarray:
    driver.save_screenshot(str(path))
    keep = os.environ.get("RAYNERF_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return np.asarray(Image.open(path).convert("RGB"), np.float64)


def _scene_part(shot: np.ndarray) -> np.ndarray:
    left, top, right, bottom = SCENE_BOX
    return shot[top:bottom, left:right]


def _assert_shows(shot: np.ndarray, sent: np.ndarray) -> None:
    """The page's canvas shows ``sent`` (stretched over it, as viser draws a background)
    and not a uniform colour: closer to the image than to its mean colour by a margin."""
    height, width = shot.shape[:2]
    expected = np.asarray(
        Image.fromarray(sent).resize((width, height), Image.Resampling.BILINEAR), np.float64
    )
    shown, expected = _scene_part(shot), _scene_part(expected)
    to_image = np.abs(shown - expected).mean()
    to_flat = np.abs(shown - shown.reshape(-1, 3).mean(axis=0)).mean()
    assert shown.std() > 3.0, f"a uniform canvas (std {shown.std():.2f})"
    assert to_image < 0.5 * to_flat, (
        f"the canvas differs from the rendered image ({to_image:.1f} vs {to_flat:.1f})"
    )


def _pose(view) -> np.ndarray:
    return pose_from_viser(view.client.camera.wxyz, view.client.camera.position)


def _click(driver, label: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//button[normalize-space(.)='{label}']").click()


def _drag(driver, dx: int, dy: int) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.CSS_SELECTOR, "canvas")
    ActionChains(driver).move_to_element_with_offset(canvas, -150, 50).click_and_hold().move_by_offset(
        dx, dy
    ).release().perform()


def test_the_page_shows_the_scene_follows_the_camera_and_saves_a_path(trained_small_run, tmp_path, free_port):
    run = trained_small_run
    config, scene_path, workdir = run.config, run.scene, run.workdir
    driver = _browser()
    mesh = make_mesh()
    step, params = load_trained_params(config, scene_path, workdir, mesh)
    renderer = FrameRenderer(config.model, params, chunk=1024)
    renderer.warm_up()
    scene = load_configured_scene(scene_path, config.data)
    path_file = tmp_path / "viewer_path.json"
    viewer = Viewer(renderer, scene, step, path_file=path_file, path_size=(64, 48), frames=12, port=free_port)
    try:
        viewer.show_cameras.value = False  # the comparisons below are with the rendered image alone
        opened = time.monotonic()
        driver.get(viewer.url)
        _wait(lambda: any(v.frames_sent for v in viewer.views.values()), 60, "the first frame")
        first_seconds = time.monotonic() - opened
        (view,) = viewer.views.values()
        _wait(lambda: view.sharp_shown, 60, "the sharper frame at rest")
        time.sleep(1.0)  # the page draws it
        before = _screenshot(driver, tmp_path / "viewer_at_rest.png")
        # The rendered scene, not a blank canvas: the page shows the image the viewer sent.
        _assert_shows(before, view.last_image)
        print(
            f"first image {first_seconds:.2f} s after the page opened "
            f"({view.first_image_seconds:.2f} s after connecting)"
        )

        # Moving the camera through the page: a new pose, a new image.
        pose_before = _pose(view)
        sent_before = view.frames_sent
        _drag(driver, 180, 40)
        _wait(lambda: view.frames_sent > sent_before and view.sharp_shown, 60, "a frame of the moved camera")
        time.sleep(1.0)
        after = _screenshot(driver, tmp_path / "viewer_moved.png")
        pose_after = _pose(view)
        assert np.abs(pose_after - pose_before).max() > 1e-3, "the drag did not move the camera"
        _assert_shows(after, view.last_image)
        assert np.abs(_scene_part(after) - _scene_part(before)).mean() > 2.0, "the image did not change"

        # A camera path from the page's buttons: two keyframes, then "Save path".
        _click(driver, "Add keyframe")
        _wait(lambda: len(viewer.keyframes) == 1, 20, "the first keyframe")
        _drag(driver, -120, 0)
        _wait(lambda: not np.allclose(_pose(view), pose_after), 20, "the camera to move")
        time.sleep(0.5)
        _click(driver, "Add keyframe")
        _wait(lambda: len(viewer.keyframes) == 2, 20, "the second keyframe")
        _click(driver, "Save path")
        _wait(path_file.exists, 20, "the path file")
    finally:
        driver.quit()
        viewer.close()
    poses, intrinsics = paths.load_path_json(path_file)
    assert poses.shape == (12, 3, 4) and (intrinsics["width"], intrinsics["height"]) == (64, 48)
    np.testing.assert_allclose(poses[0], viewer.keyframes[0].camtoworld, atol=1e-6)
    np.testing.assert_allclose(poses[-1], viewer.keyframes[1].camtoworld, atol=1e-6)
    assert step == run.steps
