"""Tests for t2v_nb.video: validation, MP4/GIF files, the JSON sidecar, atomic saves, HTML."""

from __future__ import annotations

import base64
import json
import pathlib
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from t2v_nb import video as video_module
from t2v_nb.video import Video, sidecar_path, video_is_available

needs_ffmpeg = pytest.mark.skipif(
    not video_is_available(), reason="no ffmpeg: pip install imageio-ffmpeg or apt install ffmpeg"
)


def moving_square(num_frames: int = 4, height: int = 32, width: int = 32) -> np.ndarray:
    """A white 8x8 square moving right over a dark blue background: float32 [F, H, W, 3]."""
    frames = np.zeros((num_frames, height, width, 3), np.float32)
    frames[..., 2] = 0.3
    for f in range(num_frames):
        x = 2 + 4 * f
        frames[f, 8:16, x : x + 8] = 1.0
    return frames


def ffmpeg_exe() -> str:
    import mediapy

    video_is_available()  # points mediapy at an ffmpeg program
    return mediapy._get_ffmpeg_path()


def stream_info(path: pathlib.Path) -> str:
    """ffmpeg's description of the video stream (`ffmpeg -i file` prints it on stderr)."""
    command = [ffmpeg_exe(), "-hide_banner", "-i", str(path)]
    proc = subprocess.run(command, capture_output=True, text=True)
    return next(line for line in proc.stderr.splitlines() if "Video:" in line)


def leftovers(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name)


RECORD = {"prompt": "a white square moving right", "seed": 0, "steps": 2, "guidance": 7.5}


# Validation


def test_properties_and_repr():
    video = Video(moving_square(8, 32, 48), fps=4, record=dict(RECORD))
    assert (video.num_frames, video.height, video.width) == (8, 32, 48)
    assert video.duration == 2.0 and isinstance(video.fps, float)
    assert video.frames.dtype == np.float32
    text = repr(video)
    assert "8 frames" in text and "32x48" in text and "a white square" in text and len(text) < 200


def test_frames_are_converted_and_clipped():
    frames = moving_square().astype(np.float64) * 1.2 - 0.1
    video = Video(frames)
    assert video.frames.dtype == np.float32
    assert video.frames.min() == 0.0 and video.frames.max() == 1.0
    assert video.to_uint8().dtype == np.uint8 and video.to_uint8().max() == 255


@pytest.mark.parametrize("shape", [(32, 32, 3), (4, 32, 32), (4, 32, 32, 4), (0, 32, 32, 3)])
def test_bad_shape_is_a_value_error_quoting_it(shape):
    with pytest.raises(ValueError, match=re.escape(str(shape)) + r".*\[F, H, W, 3\]"):
        Video(np.zeros(shape, np.float32))


def test_nan_frames_are_a_value_error_with_count_and_fix():
    frames = moving_square()
    frames[0, 0, 0] = np.nan  # 3 values
    frames[1, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"4 non-finite.*float32"):
        Video(frames)


def test_uint8_frames_and_bad_fps_are_rejected():
    with pytest.raises(TypeError, match=r"uint8.*/ 255"):
        Video(np.zeros((2, 8, 8, 3), np.uint8))
    for fps in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="fps"):
            Video(moving_square(), fps=fps)


# Files


@needs_ffmpeg
def test_mp4_round_trip_is_h264_and_close(tmp_path):
    import mediapy

    frames = moving_square()
    out = Video(frames, fps=8.0).save(tmp_path / "clip.mp4")
    assert out == tmp_path / "clip.mp4" and out.stat().st_size > 0
    info = stream_info(out)
    assert "h264" in info and "yuv420p" in info and "32x32" in info
    back = mediapy.read_video(out)  # [F, H, W, 3] uint8
    assert back.shape == (4, 32, 32, 3)
    assert back.metadata.fps == pytest.approx(8.0)
    error = np.abs(back.astype(np.float32) / 255 - frames).mean()
    assert error < 0.03, error
    assert leftovers(tmp_path) == []


@needs_ffmpeg
def test_gif_loops_with_right_frame_count(tmp_path):
    from PIL import Image

    out = Video(moving_square(5, 32, 32), fps=10.0).save(tmp_path / "clip.gif")
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.size == (32, 32)
        assert gif.n_frames == 5
        assert gif.info.get("loop") == 0  # 0 = forever
        assert gif.info.get("duration") == 100  # ms per frame at 10 fps
        gif.seek(2)
        frame = np.asarray(gif.convert("RGB"), np.float32) / 255
    assert np.abs(frame - moving_square(5)[2]).mean() < 0.03


@needs_ffmpeg
def test_odd_size_is_padded_for_mp4_and_load_crops_back(tmp_path):
    frames = moving_square(3, 31, 45)
    out = Video(frames, record=dict(RECORD)).save(tmp_path / "odd.mp4")
    assert "46x32" in stream_info(out)  # W x H, padded to even
    meta = json.loads((tmp_path / "odd.mp4.json").read_text())
    assert (meta["height"], meta["width"]) == (31, 45)
    assert (meta["encoded_height"], meta["encoded_width"]) == (32, 46)
    back = Video.load(out)
    assert back.frames.shape == (3, 31, 45, 3) and back.record == RECORD
    assert np.abs(back.frames - frames).mean() < 0.03
    Video(frames).save(tmp_path / "odd.gif", sidecar=False)  # GIF needs no padding
    assert "45x31" in stream_info(tmp_path / "odd.gif")
    gif = Video.load(tmp_path / "odd.gif")  # no odd.gif.json: no record; odd.mp4.json is not its
    assert gif.record == {} and gif.frames.shape == (3, 31, 45, 3)


@needs_ffmpeg
def test_the_same_video_as_mp4_and_gif_side_by_side(tmp_path):
    video = Video(moving_square(3, 31, 45), record=dict(RECORD))
    video.save(tmp_path / "clip.mp4")
    video.save(tmp_path / "clip.gif")  # its sidecar does not collide with the MP4's
    assert sidecar_path(tmp_path / "clip.mp4") == tmp_path / "clip.mp4.json"
    mp4_meta = json.loads((tmp_path / "clip.mp4.json").read_text())
    gif_meta = json.loads((tmp_path / "clip.gif.json").read_text())
    assert (mp4_meta["file"], gif_meta["file"]) == ("clip.mp4", "clip.gif")
    assert (mp4_meta["encoded_width"], "encoded_width" in gif_meta) == (46, False)  # only the MP4 is padded
    assert mp4_meta["record"] == gif_meta["record"] == RECORD
    for name in ("clip.mp4", "clip.gif"):
        back = Video.load(tmp_path / name)
        assert back.record == RECORD and back.frames.shape == (3, 31, 45, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif", "clip.gif.json", "clip.mp4", "clip.mp4.json"]


@needs_ffmpeg
def test_an_older_sidecar_named_without_the_video_suffix_is_read_when_it_matches(tmp_path):
    Video(moving_square(), record=dict(RECORD)).save(tmp_path / "clip.mp4")
    (tmp_path / "clip.mp4.json").rename(tmp_path / "clip.json")  # what an earlier t2v_nb wrote
    assert Video.load(tmp_path / "clip.mp4").record == RECORD
    Video(moving_square()).save(tmp_path / "clip.gif", sidecar=False)
    with pytest.warns(UserWarning, match=r"clip\.json.*describes 'clip\.mp4'"):
        gif = Video.load(tmp_path / "clip.gif")  # clip.json belongs to clip.mp4
    assert gif.record == {}


@needs_ffmpeg
def test_existing_files_are_kept_unless_overwrite(tmp_path):
    path = tmp_path / "clip.mp4"
    Video(moving_square(), record={"prompt": "first"}).save(path)
    before, before_json = path.read_bytes(), (tmp_path / "clip.mp4.json").read_text()
    second = Video(1.0 - moving_square(), record={"prompt": "second"})
    with pytest.raises(FileExistsError, match=r"clip\.mp4.*overwrite=True"):
        second.save(path)
    assert path.read_bytes() == before and (tmp_path / "clip.mp4.json").read_text() == before_json
    # The sidecar is protected too, and checked before anything is written.
    path.unlink()
    with pytest.raises(FileExistsError, match=r"clip\.mp4\.json"):
        second.save(path)
    assert not path.exists()
    second.save(path, overwrite=True)
    assert path.read_bytes() != before
    assert json.loads((tmp_path / "clip.mp4.json").read_text())["record"]["prompt"] == "second"
    assert leftovers(tmp_path) == []


@needs_ffmpeg
def test_sidecar_contents_and_serialisation(tmp_path):
    import torch

    record = {
        **RECORD,
        "seed": np.int64(7),
        "guidance": np.float32(7.5),
        "size": (32, 32),
        "dtype": torch.float16,
        "model_dir": pathlib.Path("/models/toy"),
        "scheduler_config": {"beta_start": np.float64(0.00085), "steps_offset": 1},
        "tokens": ["<|startoftext|>", "a</w>"],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing here looks secret: no "dropped" warning
        Video(moving_square(), fps=6.0, record=record).save(tmp_path / "run.mp4")
    meta = json.loads((tmp_path / "run.mp4.json").read_text())
    assert meta["file"] == "run.mp4"
    assert (meta["fps"], meta["num_frames"], meta["height"], meta["width"]) == (6.0, 4, 32, 32)
    assert "t2v_nb_version" in meta and "encoded_height" not in meta
    rec = meta["record"]
    assert rec["prompt"] == RECORD["prompt"] and rec["seed"] == 7 and rec["guidance"] == 7.5
    assert rec["size"] == [32, 32] and rec["dtype"] == "torch.float16"
    assert rec["model_dir"] == "/models/toy"
    assert rec["scheduler_config"] == {"beta_start": 0.00085, "steps_offset": 1}
    assert rec["tokens"] == ["<|startoftext|>", "a</w>"]  # a token table is not a credential


@needs_ffmpeg
def test_saved_files_get_ordinary_permissions_and_readable_text(tmp_path):
    reference = tmp_path / "reference"
    reference.write_text("")  # created with the process umask, like any new file
    Video(moving_square(), record={"prompt": "un carré blanc"}).save(tmp_path / "clip.mp4")
    for name in ("clip.mp4", "clip.mp4.json"):
        assert (tmp_path / name).stat().st_mode == reference.stat().st_mode
    assert "un carré blanc" in (tmp_path / "clip.mp4.json").read_text(encoding="utf-8")


@needs_ffmpeg
def test_secret_like_record_entries_are_not_written(tmp_path):
    secret = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123"
    record = {
        **RECORD,
        "token": secret,
        "HF_TOKEN": secret,
        "api_key": "sk-123",
        "OpenAI-API-Key": "sk-456",
        "db_password": "hunter2",
        "client_secret": "s3",
        "model": {"source": "org/model", "use_auth_token": secret, "note": secret},
    }
    with pytest.warns(UserWarning, match=r"HF_TOKEN.*model\.use_auth_token"):
        Video(moving_square(), record=record).save(tmp_path / "run.gif")
    text = (tmp_path / "run.gif.json").read_text()
    for value in (secret, "sk-123", "sk-456", "hunter2", '"s3"'):
        assert value not in text
    rec = json.loads(text)["record"]
    assert set(rec) == set(RECORD) | {"model"}
    assert rec["model"] == {"source": "org/model", "note": "<redacted>"}
    assert record["HF_TOKEN"] == secret  # the Video's own record is left as it was


def test_unsupported_suffix_lists_supported_ones(tmp_path):
    for name in ("clip.avi", "clip", "clip.webm"):
        with pytest.raises(ValueError, match=r"\.mp4.*\.gif"):
            Video(moving_square()).save(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@needs_ffmpeg
@pytest.mark.parametrize("name", ["clip.mp4", "clip.gif"])
def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch, name):
    import mediapy

    real_write = mediapy.write_video

    def write_then_fail(path, images, **kwargs):
        real_write(path, images, **kwargs)  # a complete temporary file exists now
        raise KeyboardInterrupt("interrupted mid-save")

    (tmp_path / "kept").mkdir()
    Video(moving_square(), record={"prompt": "old"}).save(tmp_path / "kept" / name)
    kept = {p.name: p.read_bytes() for p in (tmp_path / "kept").iterdir()}
    monkeypatch.setattr(mediapy, "write_video", write_then_fail)
    new = Video(1.0 - moving_square(), record={"prompt": "new"})
    with pytest.raises(KeyboardInterrupt):
        new.save(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # nothing, not even a .tmp
    with pytest.raises(KeyboardInterrupt):
        new.save(tmp_path / "kept" / name, overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "kept").iterdir()} == kept  # untouched


@needs_ffmpeg
def test_failing_sidecar_leaves_no_video(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(video_module.json, "dumps", fail)
    with pytest.raises(OSError, match="disk full"):
        Video(moving_square()).save(tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []


def test_missing_ffmpeg_error_names_the_fix(tmp_path, monkeypatch):
    import mediapy

    monkeypatch.setattr(video_module, "_ffmpeg_checked", False)
    monkeypatch.setattr(mediapy, "video_is_available", lambda: False)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails
    assert video_is_available() is False
    with pytest.raises(RuntimeError, match=r"pip install imageio-ffmpeg.*apt install ffmpeg"):
        Video(moving_square()).save(tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []


# HTML


@needs_ffmpeg
def test_to_html_embeds_an_h264_mp4(tmp_path):
    html = Video(moving_square(), fps=8.0).to_html(width=320, loop=False)
    assert html.startswith("<video") and 'width="320" height="320"' in html
    assert " loop" not in html and "autoplay muted" in html
    b64 = re.search(r'src="data:video/mp4;base64,([A-Za-z0-9+/=]+)"', html).group(1)
    mp4 = tmp_path / "from_html.mp4"
    mp4.write_bytes(base64.b64decode(b64))
    assert "h264" in stream_info(mp4) and "32x32" in stream_info(mp4)


@needs_ffmpeg
def test_to_html_downsamples_large_videos_with_a_warning(tmp_path):
    frames = np.zeros((2, 600, 1100, 3), np.float32)  # [F, H, W, 3], 1100 > 512
    with pytest.warns(UserWarning, match=r"600x1100.*downsampled to 200x366"):
        html = Video(frames).to_html()
    assert 'width="1100" height="600"' in html  # shown at full size, encoded smaller
    mp4 = tmp_path / "small.mp4"
    mp4.write_bytes(base64.b64decode(re.search(r"base64,([^\"]+)", html).group(1)))
    assert "366x200" in stream_info(mp4)
