"""`slimdrive scenario preview`: the expert drives one library file through DrivingEnv and the command
writes a PNG at the first trigger and an MP4 of the drive, both readable by OpenCV."""
from __future__ import annotations

import cv2

from scenarios.suites import SUITES_DIR
from slimdrive import main

FAST_ENV = ["env.rig=front1", "env.image_size_x=64", "env.image_size_y=32"]
STEPS = 200  # 10 s: the jaywalker is released after about 7 s


def test_preview_writes_a_png_at_the_trigger_and_a_playable_mp4(tmp_path, capsys):
    path = SUITES_DIR.parent / "library" / "jaywalker_parked_van.yaml"
    assert main(["scenario", "preview", f"path={path}", "seed=3", f"out={tmp_path}", f"max_steps={STEPS}",
                 *FAST_ENV]) == 0
    png, mp4 = tmp_path / "jaywalker_parked_van-3.png", tmp_path / "jaywalker_parked_van-3.mp4"
    assert f"wrote {png} and {mp4}" in capsys.readouterr().out
    picture = cv2.imread(str(png))
    # cameras and the bird's-eye view
    assert picture is not None and picture.ndim == 3 and picture.shape[1] > 64 and picture.std() > 5.0
    video = cv2.VideoCapture(str(mp4))
    try:
        assert video.isOpened()
        frames = []
        while True:
            ok, frame = video.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        video.release()
    assert len(frames) == STEPS  # the drive outlasts max_steps: one frame per step
    assert frames[0].shape == picture.shape
    assert frames[0].std() > 5.0 and cv2.absdiff(frames[0], frames[-1]).mean() > 1.0  # the view changes
    # The PNG is the frame of the trigger moment, neither the first nor the last of the drive (mp4v is lossy).
    errors = [float(cv2.absdiff(frame, picture).mean()) for frame in frames]
    best = min(range(len(frames)), key=errors.__getitem__)
    assert 0 < best < len(frames) - 1 and errors[best] < 0.5 * sorted(errors)[len(errors) // 2]
