"""`Video`: decoded frames, their frame rate and the record of the run that made them.

The pipeline's `decode()` returns a `Video`. It shows itself in a notebook as an inline H.264
`<video>` element, and saves itself as MP4 (H.264, yuv420p: what browsers play) or looping GIF,
with a JSON sidecar holding the run record (secret-looking keys dropped).

Encoding uses the `ffmpeg` program through mediapy. It is looked up on first use: the one mediapy
is set to (by default `ffmpeg` on the PATH), else the binary bundled with `imageio-ffmpeg`.
Reading files back (`Video.load`) needs imageio-ffmpeg < 0.8: the ffmpeg 9 bundled with 0.8
rejects an option mediapy 1.2.7 passes when reading (writing still works).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
import pathlib
import re
import uuid
import warnings
from typing import Any

import numpy as np

__all__ = ["Video", "sidecar_path", "video_is_available"]

_SUFFIXES = (".mp4", ".gif")
_MAX_DISPLAY_SIDE = 512  # to_html downsamples larger videos to keep notebooks small.
_MIN_DISPLAY_WIDTH = 256  # to_html shows tiny videos (e.g. the 64x64 toy) at least this wide.
_SECRET_WORDS = ("secret", "password", "passwd", "apikey", "credential", "privatekey")
_HF_TOKEN_VALUE = re.compile(r"^hf_[A-Za-z0-9]{20,}$")
_ffmpeg_checked = False


def _mediapy() -> Any:
    """Returns the mediapy module with a working `ffmpeg`, or raises an error naming the fix."""
    global _ffmpeg_checked
    try:
        import mediapy
    except ImportError as e:
        raise ImportError("Video needs mediapy; install it with 'pip install mediapy'.") from e
    if not _ffmpeg_checked and not mediapy.video_is_available():
        try:
            import imageio_ffmpeg

            mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())
        except (ImportError, RuntimeError) as e:
            raise RuntimeError(
                "No 'ffmpeg' program found (needed to encode video); install one with "
                "'pip install imageio-ffmpeg' or 'apt install ffmpeg'."
            ) from e
    _ffmpeg_checked = True
    return mediapy


def video_is_available() -> bool:
    """Returns True if videos can be encoded here (mediapy and an `ffmpeg` program are found).

    >>> if video_is_available():  # doctest: +SKIP
    ...     video.show()
    """
    try:
        _mediapy()
    except (ImportError, RuntimeError):
        return False
    return True


def sidecar_path(path: str | os.PathLike[str]) -> pathlib.Path:
    """The JSON sidecar `Video.save(path)` writes beside the video: the file name plus `.json`.

    >>> sidecar_path("runs/clip.mp4"), sidecar_path("runs/clip.gif")
    (PosixPath('runs/clip.mp4.json'), PosixPath('runs/clip.gif.json'))
    """
    path = pathlib.Path(path)
    return path.with_name(path.name + ".json")


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Repeats the last row/column of [F, H, W, 3] frames so H and W are even (yuv420p needs it)."""
    _, h, w, _ = frames.shape
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _is_secret(key: str) -> bool:
    """Returns True for a key that names a credential ("tokens", "tokenizer" do not)."""
    name = re.sub(r"[^a-z0-9]", "", key.lower())  # "HF_Token" -> "hftoken"
    return any(word in name for word in _SECRET_WORDS) or name.endswith("token")


def _scrub(obj: Any, dropped: list[str], where: str = "") -> Any:
    """Returns `obj` without secret-named dict entries, HF-token-like strings redacted."""
    if isinstance(obj, dict):
        kept = {}
        for key, value in obj.items():
            if _is_secret(str(key)):
                dropped.append(f"{where}{key}")
            else:
                kept[str(key)] = _scrub(value, dropped, f"{where}{key}.")
        return kept
    if isinstance(obj, (list, tuple)):
        return [_scrub(v, dropped, where) for v in obj]
    if isinstance(obj, str) and _HF_TOKEN_VALUE.match(obj):
        dropped.append(f"{where}<value>")
        return "<redacted>"
    return obj


def _json_default(obj: Any) -> Any:
    """Serialises what `json` cannot: numpy/torch values, dtypes, paths, sets."""
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    return str(obj)  # torch.dtype -> "torch.float16", Path -> "out/a.mp4", anything else readable


def _write_atomically(path: pathlib.Path, write: Any) -> pathlib.Path:
    """Calls `write(tmp_path)` for a new hidden file beside `path`; returns the temporary path.

    The temporary name keeps the suffix (ffmpeg picks the format from it) and is created by
    `write` (so it gets the usual permissions, unlike `tempfile.mkstemp`'s 0600). On any error it
    is removed and the error re-raised; the caller moves the file into place with `os.replace`.
    """
    tmp_path = path.parent / f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}"
    try:
        write(tmp_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return tmp_path


def _write_new(path: pathlib.Path, text: str) -> None:
    with path.open("x", encoding="utf-8") as f:  # "x": fail rather than clobber a file
        f.write(text)


@dataclasses.dataclass(repr=False, eq=False)
class Video:
    """Decoded video frames with their frame rate and the record of the run that made them.

    Attributes:
        frames: float32 [F, H, W, 3] in [0, 1] (converted to float32 and clipped on creation).
        fps: Frames per second, > 0.
        record: The run record (prompt, seed, scheduler, steps, ...), filled by the pipeline.

    >>> frames = np.zeros((8, 64, 64, 3), np.float32)  # [F, H, W, 3]
    >>> video = Video(frames, fps=8.0, record={"prompt": "a red circle moving right"})
    >>> video
    Video(8 frames, 64x64 (HxW), 8 fps, 1.00 s, prompt='a red circle moving right')
    >>> video.save("out.mp4")  # also writes out.mp4.json  # doctest: +SKIP
    """

    frames: np.ndarray
    fps: float = 8.0
    record: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        frames = np.asarray(self.frames)
        if not np.issubdtype(frames.dtype, np.floating):
            raise TypeError(
                f"frames have dtype {frames.dtype}, expected floats in [0, 1]; "
                "for uint8 frames pass frames.astype(np.float32) / 255."
            )
        if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape) < 1:
            raise ValueError(
                f"frames shape {frames.shape} is not of the form [F, H, W, 3] with F, H, W >= 1."
            )
        bad = int(np.size(frames) - np.count_nonzero(np.isfinite(frames)))
        if bad:
            raise ValueError(
                f"frames contain {bad} non-finite values (NaN/inf) of {frames.size}; this "
                "usually means an fp16 VAE overflowed: decode with the VAE in float32."
            )
        self.frames = np.clip(frames, 0.0, 1.0).astype(np.float32, copy=False)
        if not (isinstance(self.fps, (int, float, np.number)) and 0 < self.fps < math.inf):
            raise ValueError(f"fps {self.fps!r} is not a positive finite number; e.g. fps=8.0.")
        self.fps = float(self.fps)

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    @property
    def duration(self) -> float:
        """Playing time in seconds."""
        return self.num_frames / self.fps

    def __repr__(self) -> str:
        prompt = f", prompt={self.record['prompt']!r}" if "prompt" in self.record else ""
        return (
            f"Video({self.num_frames} frames, {self.height}x{self.width} (HxW), "
            f"{self.fps:g} fps, {self.duration:.2f} s{prompt})"
        )

    def to_uint8(self) -> np.ndarray:
        """Returns the frames as uint8 [F, H, W, 3] in [0, 255] (rounded)."""
        return np.round(self.frames * 255.0).astype(np.uint8)

    def to_html(self, width: int | None = None, loop: bool = True, autoplay: bool = True) -> str:
        """Returns an HTML `<video>` element with the H.264 MP4 embedded as a base64 data URI.

        Needs no IPython. Videos larger than 512 px on a side are downsampled (with a warning)
        before encoding to keep the notebook small; `save()` always keeps full resolution.

        Args:
            width: Display width in pixels; default: the video's width, but at least 256 (the
                browser scales; the height follows the aspect ratio).
            loop: Whether playback repeats forever.
            autoplay: Whether playback starts by itself (muted, as browsers require).

        Returns:
            The HTML string.

        >>> html = video.to_html(width=320)  # doctest: +SKIP
        """
        if width is not None and (type(width) is not int or width < 1):
            raise ValueError(f"width {width!r} is not a positive int (pixels); e.g. width=320.")
        frames = self.to_uint8()  # [F, H, W, 3]
        factor = math.ceil(max(self.height, self.width) / _MAX_DISPLAY_SIDE)
        if factor > 1:
            h, w = self.height // factor * factor, self.width // factor * factor
            f, k = self.num_frames, factor
            pooled = frames[:, :h, :w].reshape(f, h // k, k, w // k, k, 3)  # average k x k blocks
            frames = np.round(pooled.mean(axis=(2, 4))).astype(np.uint8)  # [F, H/k, W/k, 3]
            warnings.warn(
                f"Video {self.height}x{self.width} (HxW) is shown downsampled to "
                f"{frames.shape[1]}x{frames.shape[2]} to keep the notebook small; "
                "save() keeps the full resolution.",
                stacklevel=2,
            )
        data = _mediapy().compress_video(
            _pad_to_even(frames), fps=self.fps, codec="h264", encoded_format="yuv420p"
        )
        width = width or max(self.width, _MIN_DISPLAY_WIDTH)
        height = round(width * self.height / self.width)
        options = " loop" * loop + " autoplay muted" * autoplay
        b64 = base64.b64encode(data).decode("ascii")
        return (
            f'<video controls playsinline{options} width="{width}" height="{height}">'
            f'<source src="data:video/mp4;base64,{b64}" type="video/mp4"/>'
            "This browser does not play H.264 MP4 video.</video>"
        )

    def show(self, **kwargs: Any) -> None:
        """Displays the video in a notebook; `kwargs` go to `to_html` (width, loop, autoplay)."""
        from IPython.display import HTML, display

        display(HTML(self.to_html(**kwargs)))

    def save(
        self, path: str | os.PathLike[str], overwrite: bool = False, sidecar: bool = True
    ) -> pathlib.Path:
        """Writes the video to `path` (.mp4 or .gif) and, by default, a JSON sidecar beside it.

        `.mp4` is H.264 yuv420p, which browsers play; yuv420p needs an even width and height, so
        an odd size is padded by repeating the last row/column (the sidecar keeps the true size).
        `.gif` loops forever. Files are written under temporary names in the same directory and
        then renamed, so an interrupted save never leaves a partial file at `path`.

        The sidecar `<path>.json` (`clip.mp4` -> `clip.mp4.json`, so the same video saved as MP4 and
        GIF side by side has two sidecars) holds the file name, fps, num_frames, height,
        width, t2v_nb's version and the record minus credential-like keys (containing "secret",
        "password", "api_key", ... or ending in "token"; a warning names them).

        Args:
            path: Output file; its suffix picks the format.
            overwrite: Replace existing files instead of raising FileExistsError.
            sidecar: Also write the JSON sidecar.

        Returns:
            The path of the video file.

        >>> video.save("runs/red_circle.mp4")  # doctest: +SKIP
        PosixPath('runs/red_circle.mp4')
        """
        path = pathlib.Path(path)
        suffix = path.suffix.lower()
        if suffix not in _SUFFIXES:
            raise ValueError(
                f"Cannot save to {str(path)!r}: suffix {path.suffix!r} is not one of "
                f"{_SUFFIXES}."
            )
        json_path = sidecar_path(path)
        targets = [path, json_path] if sidecar else [path]
        for target in targets:
            if target.exists() and not overwrite:
                raise FileExistsError(f"{str(target)!r} exists; pass overwrite=True to replace it.")
        mediapy = _mediapy()
        frames = self.to_uint8()  # [F, H, W, 3]
        if suffix == ".mp4":
            frames = _pad_to_even(frames)
            faststart = ["-movflags", "+faststart"]  # index first: browsers start playing sooner
            options = dict(codec="h264", encoded_format="yuv420p", qp=20, ffmpeg_args=faststart)
        else:
            options = dict(codec="gif")  # ffmpeg's GIF muxer loops forever by default

        def write_video(tmp: pathlib.Path) -> None:
            mediapy.write_video(tmp, frames, fps=self.fps, **options)

        written = [_write_atomically(path, write_video)]
        try:
            if sidecar:
                text = self._sidecar_json(path.name, frames.shape[1:3])
                written.append(_write_atomically(json_path, lambda tmp: _write_new(tmp, text)))
            for tmp, target in zip(written, targets):
                os.replace(tmp, target)
        finally:
            for tmp in written:
                tmp.unlink(missing_ok=True)
        return path

    def _sidecar_json(self, file_name: str, encoded_size: tuple[int, int]) -> str:
        """Returns the sidecar text: metadata plus the record with secret-looking keys dropped."""
        dropped: list[str] = []
        record = _scrub(self.record, dropped)
        if dropped:
            warnings.warn(f"Not writing secret-looking record entries {dropped}.", stacklevel=3)
        try:
            from t2v_nb import __version__ as version
        except ImportError:
            version = None
        meta = dict(file=file_name, fps=self.fps, num_frames=self.num_frames, height=self.height,
                    width=self.width, t2v_nb_version=version)
        if tuple(encoded_size) != (self.height, self.width):
            meta["encoded_height"], meta["encoded_width"] = encoded_size
        text = json.dumps({**meta, "record": record}, indent=2, ensure_ascii=False,
                          default=_json_default)
        return text + "\n"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Video:
        """Reads a video saved by `save` (frames, fps, and the record from its sidecar if present).

        Needs imageio-ffmpeg < 0.8 or a system ffmpeg < 9 (see the module docstring).

        >>> video = Video.load("runs/red_circle.mp4")  # doctest: +SKIP
        """
        path = pathlib.Path(path)
        array = _mediapy().read_video(path)  # [F, H, W, 3] uint8
        fps = array.metadata.fps if array.metadata and array.metadata.fps else 8.0
        frames = np.asarray(array, dtype=np.float32) / 255.0
        record: dict[str, Any] = {}
        json_path = sidecar_path(path)
        if not json_path.exists():  # earlier t2v_nb wrote clip.json, for clip.mp4 and clip.gif alike
            json_path = path.with_suffix(".json")
        meta = json.loads(json_path.read_text("utf-8")) if json_path.exists() else {}
        if meta and meta.get("file") != path.name:  # an old clip.json of clip.mp4 beside clip.gif
            warnings.warn(f"{str(json_path)!r} describes {meta.get('file')!r}; record not loaded.")
        elif meta:
            record, fps = meta.get("record", {}), meta.get("fps", fps)
            frames = frames[:, : meta.get("height"), : meta.get("width")]  # drop yuv420p padding
        return cls(frames, fps=fps, record=record)
