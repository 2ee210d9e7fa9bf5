"""Videos of a render killed while it writes them.

Promise: a video write killed outright (SIGKILL: nothing can clean up) leaves its
``.partial.mp4`` behind only until the video is written again: the rerun removes it
and writes a complete video.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from raynerf.render import video

ENDLESS_WRITE = """
import sys, numpy as np
from raynerf.render.video import write_video
def frames():
    while True:
        yield np.zeros((16, 16, 3), np.uint8)
write_video(sys.argv[1], frames(), fps=5)
"""


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # the child execs at once
def test_a_killed_video_write_leaves_no_partial_file_once_rerun(tmp_path):
    path = tmp_path / "scene_path_renders_step_8_color.mp4"
    # Its own process group: the kill takes the writer and its ffmpeg child together, as
    # a killed job or VM does (an orphaned ffmpeg could re-create the file later).
    proc = subprocess.Popen([sys.executable, "-c", ENDLESS_WRITE, str(path)], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("*.partial.mp4")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the endless write ended"
            time.sleep(0.05)
        time.sleep(0.5)  # let ffmpeg open its output
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert list(tmp_path.glob(".*.partial.mp4")), "the kill should leave a partial file"
    other = tmp_path / ".another_video.abc.partial.mp4"  # another output's: not ours to remove
    other.write_bytes(b"x")

    frames = [np.full((16, 16, 3), 40 * i, np.uint8) for i in range(3)]
    video.write_video(path, frames, fps=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, other.name])
    assert video.read_video_info(path)[:3] == (3, 16, 16)
