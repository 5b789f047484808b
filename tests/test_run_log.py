"""run_log.py: log.jsonl always; TensorBoard event files with --log=tensorboard and none without; the
one-line message when the tensorboard package is missing; previews as images (videos with moviepy)."""
import builtins
import json

import numpy as np
import pytest

import train
from nano_videodiff.errors import UserError
from nano_videodiff.training import run_log
from nano_videodiff.training.run_log import MISSING_TENSORBOARD, NoLog, RunLog, open_run_log


def event_files(out_dir):
    return sorted(out_dir.rglob("events.out.tfevents.*"))


def read_events(out_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(out_dir / "tensorboard"))
    events.Reload()
    return events


def smoke(out_dir, *extra):
    return ["--config=smoke", "--max_steps=4", "--log_every=2", "--preview_every=2", "--dtype=fp32",
            f"--out_dir={out_dir}", *extra]


def test_tensorboard_run_writes_scalars_and_previews(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "tb"
    train.main(smoke(out, "--log=tensorboard"))
    assert len(event_files(out)) == 1
    events = read_events(out)
    assert {"train/loss", "train/lr", "train/videos_per_s"} <= set(events.Tags()["scalars"])
    assert "preview/frames" in events.Tags()["images"]
    # the same numbers as log.jsonl, which is still written
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [2, 4]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in rows])
    assert [e.step for e in events.Images("preview/frames")] == [2, 4]


def test_default_jsonl_run_writes_no_event_file(tmp_path):
    out = tmp_path / "jsonl"
    train.main(smoke(out))
    assert event_files(out) == [] and not (out / "tensorboard").exists()
    assert len((out / "log.jsonl").read_text().splitlines()) == 2


def test_resume_keeps_log_lines_up_to_the_checkpoint(tmp_path):
    (tmp_path / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (2, 4, 6)))
    log = RunLog(tmp_path, "jsonl", resume_step=4)
    log.scalars({"step": 6, "loss": 0.5})
    assert [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()] == [2, 4, 6]
    RunLog(tmp_path, "jsonl")  # a fresh run starts an empty log
    assert (tmp_path / "log.jsonl").read_text() == ""


def test_missing_tensorboard_is_a_one_line_user_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(UserError) as info:
        open_run_log(tmp_path, "tensorboard")
    message = str(info.value)
    assert message == MISSING_TENSORBOARD and "\n" not in message
    assert 'pip install -e ".[tensorboard]"' in message
    assert not (tmp_path / "log.jsonl").exists()  # it stopped before touching the run folder
    # jsonl needs nothing
    open_run_log(tmp_path, "jsonl").scalars({"step": 1, "loss": 1.0})


def test_bad_log_kind_and_other_ranks(tmp_path):
    with pytest.raises(UserError, match="--log must be one of jsonl, tensorboard"):
        open_run_log(tmp_path, "wandb")
    with pytest.raises(ValueError, match="--log must be jsonl or tensorboard"):
        train.main(smoke(tmp_path / "bad", "--log=wandb"))
    other = open_run_log(tmp_path, "jsonl", rank=1)  # only rank 0 writes
    assert isinstance(other, NoLog)
    other.scalars({"step": 1, "loss": 1.0})
    other.preview(1, tmp_path / "nothing")
    assert not (tmp_path / "log.jsonl").exists()


class RecordingWriter:
    def __init__(self):
        self.calls = []

    def add_image(self, tag, image, step, dataformats):
        self.calls.append(("image", tag, image.shape, image.dtype, step, dataformats))

    def add_video(self, tag, video, step, fps):
        self.calls.append(("video", tag, video.shape, video.dtype, step, fps))

    def flush(self):
        pass


def test_preview_files_become_an_image_and_with_moviepy_a_video(tmp_path):
    import imageio.v3 as iio
    frames = (np.arange(3 * 8 * 10) % 255).astype(np.uint8).reshape(3, 8, 10)  # 3 grey frames of 8x10
    iio.imwrite(tmp_path / "step_000002.png", np.concatenate(list(frames), axis=1))
    iio.imwrite(tmp_path / "step_000002.gif", frames[..., None].repeat(3, -1), duration=100, loop=0)
    log = RunLog.__new__(RunLog)  # the writer replaced by a recorder: no tensorboard needed for this test
    log.writer, log.videos = RecordingWriter(), True
    log.preview(2, tmp_path / "step_000002", fps=10.0)
    image, video = log.writer.calls
    assert image == ("image", "preview/frames", (8, 30, 1), np.uint8, 2, "HWC")
    assert video == ("video", "preview/video", (1, 3, 3, 8, 10), np.uint8, 2, 10)
    log.writer.calls.clear()
    log.videos = False  # without moviepy: the image only
    log.preview(2, tmp_path / "step_000002")
    assert [c[0] for c in log.writer.calls] == ["image"]
    assert run_log.SCALARS == ("loss", "lr", "videos_per_s")
