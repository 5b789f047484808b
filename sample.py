"""Turn a checkpoint into videos: generation, or a VDT task with given content, plus metrics.

    python sample.py --ckpt=out/bouncing_balls/ckpt.pt --out_dir=out/samples          # generate
    python sample.py --ckpt=out/bb_tasks/ckpt.pt --task=predict --out_dir=out/predict  # from toy test clips
    python sample.py --ckpt=... --task=interpolate --every=4 --context=my_clip.gif     # from your file
    python sample.py --ckpt=... --task=predict --cfg_scale=2 --guidance=context        # context guidance
    python sample.py --ckpt=out/physion_collide/ckpt.pt --eval --out_dir=out/eval      # model vs baselines
    python sample.py --ckpt=... --task=predict --num_frames=64   # longer than the model: rollout.py
    python sample.py --ckpt=... --eval --horizon=24              # scores by horizon (evaluation/horizon.py)
    python sample.py --ckpt=out/moving_mnist/ckpt.pt --eval --mnist_test_seq=mnist_test_seq.npy  # the standard protocol
    python sample.py --ckpt=out/videoldm_bouncing_balls/ckpt.pt --image_model          # Video LDM Fig. 2
    python sample.py --ckpt=out/bouncing_balls_interp/ckpt.pt --method=interpolate     # key frames -> x4 -> x16
    python sample.py --ckpt=out/bb_tasks/ckpt.pt --method=conv_time --task=predict     # 4T frames in one pass
    python sample.py --ckpt=out/physion_text/ckpt.pt --prompt="the red ball moves left|the red ball falls"

Tasks (masking.py): generate | predict | backward | interpolate | animate | complete (and random_frames).
Without ``--context`` the given content comes from held-out clips of the model's own toy dataset
(``--data_seed`` picks them), so the ground truth is known and PSNR/SSIM over the generated positions are
printed and saved as metrics.json. Each video is written as one GIF showing
[given content | model output | ground truth] side by side, and grid.png stacks the same as frame strips.

The model is rebuilt from the config saved in the checkpoint (loaded with ``weights_only=True``; damaged
files and NaN weights are refused). A --context clip shorter than the model's frames must hold every frame the
task gives; without ground truth for every frame no metrics are written. ``--overwrite`` replaces all earlier
samples. Mistakes in options or files end with "error: <message>" and exit status 2 (``--debug``: traceback).
``python sample.py --help`` lists every option.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import toy_data
from nano_videodiff import masking
from nano_videodiff.prompts import check_text_model, prompt_captions, report_alignment
from nano_videodiff.errors import ExistingOutput, MissingFile, UserError, run_script
from nano_videodiff.training.config import Config, options_help, parse_into, split_args
from nano_videodiff.generation import generate, show_known
from nano_videodiff.hardware import pick_device, resolve_dtype
from nano_videodiff.evaluation.i3d import load_i3d
from nano_videodiff.evaluation.metrics import psnr, ssim
from nano_videodiff.models import load_model
from nano_videodiff.rollout import context_frames, rollout
from nano_videodiff.evaluation.video_io import frames_grid, load_video, save_gif, save_png, video_grid


@dataclass
class SampleArgs:
    ckpt: str = ""                # checkpoint written by train.py (OUT_DIR/ckpt.pt)
    out_dir: str = "out/samples"  # where GIFs, PNGs and metrics.json go
    task: str = "generate"        # generate | predict | backward | interpolate | animate | complete | random_frames
    context: str = ""             # a GIF, MP4 or .npy video to take the given content from ("" = toy test clips)
    num_context: int = 0          # predict/backward: given frames (0 = the training config's, else T // 2)
    every: int = 4                # interpolate: every n-th frame is given (and the last)
    frame_index: int = 0          # animate: which frame is given
    data_seed: int = 0            # which held-out toy clips give the context
    num_videos: int = 8
    steps: int = 0                # sampler steps; 0 = the checkpoint config's sample_steps
    solver: str = ""              # heun | euler; "" = the config's solver
    seed: int = 0                 # noise seed: same seed, same videos
    cfg_scale: float = 1.0        # guidance weight (1 = none)
    guidance: str = "label"       # label (drop the label) | context (drop the given content)
    label: int = -1               # class/scenario label for every video; -1 = cycle over classes
    S_churn: float = 0.0          # EDM Alg. 2 stochasticity (0 = deterministic)
    frame_interval: float = -1.0  # seconds between frames; -1 = the data's 1/fps; 0 = images (Snap Video)
    use_ema: bool = True          # sample from the EMA weights (recommended)
    batch_size: int = 8           # videos per sampler call
    device: str = "auto"
    dtype: str = "auto"           # auto | fp32 | bf16 (autocast for the network; the sampler math stays fp32)
    overwrite: bool = False       # allow writing into an out_dir that already holds samples
    eval: bool = False            # score forward prediction (model vs baselines) on held-out clips: eval.json
    eval_clips: int = 64          # --eval: how many held-out clips
    num_frames: int = 0           # predict: frames of the video (0 = the model's T; more: autoregressive rollout)
    horizon: int = 0              # --eval on toy Physion: roll out H frames, scored per step and window
    fvd_weights: str = ""         # --eval: an I3D file (i3d_torchscript.pt or a state dict) for FVD; never downloaded
    readout_clips: int = 0        # --eval on physion_all: training clips for Physion's OCP readout (0 = none)
    mnist_test_seq: str = ""      # --eval on Moving MNIST: the standard mnist_test_seq.npy (or its folder);
                                  # "" = generated clips (evaluation/mmnist_protocol.py)
    image_model: bool = False     # videoldm: also sample its frozen image model (temporal layers off) from the
                                  # same noise, and write [image model | aligned video model] side by side
                                  # (its learned alphas: tutorials/05_temporal_alignment.py plots them)
    method: str = ""              # longer than the model (long_videos.py): interpolate (Video LDM's stack, key
                                  # frames -> x4 -> x16) | conv_time (4T or --num_frames frames, attention
                                  # masked to T - 1) | rollout (the same frames by autoregressive windows)
    upsampler: str = ""           # super-resolution stage(s) after this model: a.pt or a.pt,b.pt (upsampler.py)
    aug_sigma: str = "0.1"        # --upsampler: noise level of the low-res input, one or one per stage (EDM)
    upsampler_steps: int = 0      # --upsampler: sampler steps of the stages; 0 = each stage's sample_steps
    dynamic_threshold: float = 0.0  # Snap Video Sec. 3.6: dynamic thresholding percentile of D, e.g. 0.995 (0 = off)
    cfg_oscillate_to: float = -1.0  # Snap Video Sec. 3.6: odd steps guide with this scale instead (-1 = off)
    prompt: str = ""              # text-to-video: prompts separated by "|", --num_videos videos each (a grid row
                                  # per prompt); toy Physion models also print their text alignment

    def validate(self) -> "SampleArgs":
        """Catch bad options before the checkpoint is read, with a message that names the flag."""
        checks = [
            (bool(self.ckpt), "pass --ckpt=PATH, the checkpoint written by train.py (e.g. out/bouncing_balls/ckpt.pt)"),
            (self.dtype in ("auto", "fp32", "bf16"), f"--dtype must be auto, fp32 or bf16, got {self.dtype!r}"),
            (self.task in masking.TASKS, f"unknown task {self.task!r}; choose from {', '.join(masking.TASKS)}"),
            (self.eval or not self.mnist_test_seq, "--mnist_test_seq is the test set of --eval; pass --eval too"),
            (self.eval or not (self.fvd_weights or self.readout_clips), "--fvd_weights and --readout_clips "
                                                                       "score --eval; pass --eval too"),
            (self.guidance in ("label", "context"), f"--guidance must be label or context, got {self.guidance!r}"),
            (self.solver in ("", "heun", "euler"), f"--solver must be heun or euler, got {self.solver!r}"),
            (self.num_videos >= 1, f"--num_videos must be >= 1, got {self.num_videos}"),
            (self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}"),
            (self.eval_clips >= 1, f"--eval_clips must be >= 1, got {self.eval_clips}"),
            (self.steps >= 0, f"--steps must be >= 1 (or 0: the checkpoint's sample_steps), got {self.steps}"),
            (self.every >= 1, f"--every must be >= 1, got {self.every}"),
            (self.num_context >= 0, f"--num_context must be >= 1 (or 0: the training config's), "
                                    f"got {self.num_context}"),
            (self.frame_index >= 0, f"--frame_index must be >= 0, got {self.frame_index}"),
            (self.num_frames == 0 or self.task == "predict", "--num_frames (a rollout) needs --task=predict"),
            (self.horizon >= 0 and (self.eval or not self.horizon), "--horizon=H (>= 1) is an option of --eval"),
            (self.label >= -1, f"--label must be a class index, or -1 to cycle over classes; got {self.label}"),
            (self.cfg_scale >= 0, f"--cfg_scale must be >= 0 (1 = no guidance), got {self.cfg_scale}"),
            (self.S_churn >= 0, f"--S_churn must be >= 0, got {self.S_churn}"),
            (not self.upsampler or (self.task == "generate" and not self.eval and not self.image_model),
             "--upsampler chains a generated video through super-resolution stages: use it with --task=generate "
             "and without --eval or --image_model"),
            (0 <= self.dynamic_threshold <= 1, f"--dynamic_threshold is a percentile in (0, 1] (0 = off), got "
                                               f"{self.dynamic_threshold}"),
            (self.frame_interval >= 0 or self.frame_interval == -1,
             f"--frame_interval must be >= 0 seconds (or -1: the data's 1/fps), got {self.frame_interval}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        return self


def parse_sample_args(argv) -> SampleArgs:
    values, wants_help = split_args(argv)  # the one --key=value parser (config.py)
    if wants_help:
        print(options_help(SampleArgs(), "usage: python sample.py --ckpt=PATH [--key=value ...]"))
        sys.exit(0)
    return parse_into(SampleArgs(), values).validate()


def task_mask(args: SampleArgs, cfg: Config, n: int) -> torch.Tensor:
    """The ``known`` mask (n, T, 1, H, W) of the requested task."""
    d = cfg.data
    kwargs = {}
    if args.task in ("predict", "backward"):
        k = args.num_context or cfg.task.num_context or d.num_frames // 2
        if k >= d.num_frames:
            raise UserError(f"--num_context={k} leaves nothing to predict: the model generates "
                            f"{d.num_frames} frames")
        kwargs = {"num_context": k}
    elif args.task == "interpolate":
        kwargs = {"every": args.every}
    elif args.task == "animate":
        if args.frame_index >= d.num_frames:
            raise UserError(f"--frame_index={args.frame_index} is outside the model's {d.num_frames} frames "
                            f"(0..{d.num_frames - 1})")
        kwargs = {"frame_index": args.frame_index}
    g = torch.Generator().manual_seed(args.seed)
    return masking.make_mask(args.task, n, video_frames(args, cfg), d.height, d.width, generator=g, **kwargs)


def video_frames(args: SampleArgs, cfg: Config) -> int:
    """Frames of the videos to write: the model's T, or --num_frames (more: rollout.py's windows)."""
    if 0 < args.num_frames < cfg.data.num_frames:
        raise UserError(f"--num_frames={args.num_frames} is shorter than the model's {cfg.data.num_frames} frames")
    return args.num_frames or cfg.data.num_frames


def context_videos(args: SampleArgs, cfg: Config, known: torch.Tensor) -> tuple:
    """(videos (N, T, C, H, W), labels or None, how many frames the clip has): from the user's file or toy
    test clips.

    A file shorter than the model's T frames is padded with grey frames, after checking that every frame the
    task gives (``known``) is inside the clip: padding must never count as given content, nor as truth.
    """
    d, frames = cfg.data, video_frames(args, cfg)
    if not args.context:
        data_cfg = Config.from_dict(cfg.to_dict()).data
        data_cfg.data_seed = args.data_seed
        dataset = toy_data.build_dataset(data_cfg, "test", clip_frames=frames)  # longer: the simulator runs on
        batch = toy_data.get_batch(dataset, range(args.num_videos))
        return batch["video"], batch.get("labels"), frames
    if not Path(args.context).exists():
        raise MissingFile(f"--context file {args.context} does not exist")
    video = load_video(args.context, channels=d.channels)
    if video.shape[1] != d.channels or tuple(video.shape[-2:]) != d.size:
        raise UserError(f"{args.context} has frames of {video.shape[1]} channels x "
                        f"{video.shape[2]}x{video.shape[3]}, but the model works on {d.channels} x "
                        f"{d.height}x{d.width} (H x W); resize the video first")
    length = video.shape[0]
    given = known.flatten(2).any(-1).any(0).nonzero().flatten().tolist()  # the frames the task gives
    outside = [t for t in given if t >= length]
    if outside:
        hint = " (or a smaller --num_context)" if args.task == "predict" else ""
        raise UserError(f"{args.context} has {length} frame(s), but --task={args.task} gives frame(s) "
                        f"{', '.join(map(str, outside[:8]))}{' ...' if len(outside) > 8 else ''} of the model's "
                        f"{d.num_frames}: pass a clip of at least {outside[-1] + 1} frames{hint}")
    if length > frames:
        print(f"{args.context}: using its first {frames} of {length} frames (the length of the videos made)")
    pad = video.new_zeros(max(frames - length, 0), *video.shape[1:])  # never given: checked above
    video = torch.cat([video, pad])[:frames]
    return video[None].repeat(args.num_videos, 1, 1, 1, 1), None, min(length, frames)


# What main writes into --out_dir (physics_eval.save_evaluation writes the same names, and eval.json).
SAMPLE_OUTPUTS = ("video_*.gif", "grid.gif", "grid.png", "metrics.json", "eval.json", "horizon.md", "horizon.png",
                  "alignment.json")


def old_samples(out_dir: Path) -> list:
    return sorted(path for pattern in SAMPLE_OUTPUTS for path in out_dir.glob(pattern))


def clear_old_samples(out_dir: Path) -> None:
    """``--overwrite``: remove the previous samples just before writing new ones, so that no old
    video_007.gif stays next to four new videos, nor a metrics.json of another task."""
    for path in old_samples(out_dir):
        path.unlink()


def main(argv=None):
    args = parse_sample_args(sys.argv[1:] if argv is None else argv)
    device = pick_device(args.device)
    args.dtype = resolve_dtype(args.dtype, device).name  # auto: bf16 only where it is fast (hardware.py)
    out_dir = Path(args.out_dir)
    if old_samples(out_dir) and not args.overwrite:
        raise ExistingOutput(f"{out_dir} already holds samples; pass --overwrite (it replaces them all) or "
                             "another --out_dir")
    extractor = load_i3d(args.fvd_weights, device) if args.fvd_weights else None  # FVD's network, or fail now
    model, cfg = load_model(args.ckpt, args.use_ema, device)
    if args.method:  # a video longer than the model's window
        from nano_videodiff import long_videos
        return long_videos.run(model, cfg, args, out_dir, device, lambda: clear_old_samples(out_dir))
    d = cfg.data
    n = args.num_videos
    captions = None
    if args.prompt:  # text-to-video (prompts.py)
        check_text_model(cfg)
        captions = prompt_captions(args.prompt, n)
        n = len(captions)
    if args.eval and d.dataset == "moving_mnist":  # the field's 10 -> 10 protocol and published numbers
        from nano_videodiff.evaluation import mmnist_protocol
        return mmnist_protocol.run(model, cfg, args, out_dir, device)
    if args.eval and args.horizon:  # the same, as a function of the horizon, by rollout
        from nano_videodiff.evaluation import horizon
        result = horizon.evaluate_from_args(model, cfg, args, device)
        clear_old_samples(out_dir)
        return horizon.save_horizon(result, out_dir, num_videos=n, fps=d.fps)
    if args.eval:  # forward prediction scored against copy-last, constant velocity and the simulator
        from nano_videodiff.evaluation import physics_eval, report
        result = physics_eval.evaluate_prediction(
            model, cfg, num_clips=args.eval_clips, steps=args.steps, seed=args.seed, device=device,
            batch_size=args.batch_size, dtype=args.dtype, num_context=args.num_context, data_seed=args.data_seed,
            return_clips=True, progress=True, solver=args.solver, cfg_scale=args.cfg_scale,
            guidance=args.guidance, S_churn=args.S_churn)
        print(physics_eval.format_table(result))
        report.extend(result, model, cfg, extractor, args.readout_clips, device, steps=args.steps, seed=args.seed,
                      batch_size=args.batch_size, dtype=args.dtype, solver=args.solver)
        clear_old_samples(out_dir)
        physics_eval.save_evaluation(result, out_dir, num_videos=n, fps=d.fps)
        print(f"wrote {out_dir / 'eval.json'} and {min(n, result['num_clips'])} videos [given | model | truth]")
        return result
    labels = None
    if d.num_classes > 0:
        if args.label >= d.num_classes:
            raise UserError(f"--label must be < {d.num_classes} (the model's number of classes)")
        labels = torch.full((n,), args.label) if args.label >= 0 else torch.arange(n) % d.num_classes

    truth = known = None
    if args.task != "generate":
        known = task_mask(args, cfg, n)
        context, data_labels, length = context_videos(args, cfg, known)
        if data_labels is not None and labels is not None and args.label < 0:
            labels = data_labels.long()
        known_x = context  # read once; it is also the ground truth when the clip is complete
        frames = video_frames(args, cfg)
        truth = context if length == frames else None
        if truth is None:
            whose = "model's" if frames == d.num_frames else "video's"
            print(f"no PSNR/SSIM: {args.context} has {length} of the {whose} {frames} frames, so the "
                  f"generated frames {length}..{frames - 1} have no ground truth")

    def sample_videos():
        kwargs = dict(labels=labels, steps=args.steps, solver=args.solver, seed=args.seed, cfg_scale=args.cfg_scale,
                      guidance=args.guidance, S_churn=args.S_churn, dtype=args.dtype, batch_size=args.batch_size,
                      device=device, progress=True,
                      frame_interval=None if args.frame_interval < 0 else args.frame_interval, captions=captions,
                      dynamic_threshold=args.dynamic_threshold,
                      cfg_oscillate_to=None if args.cfg_oscillate_to < 0 else args.cfg_oscillate_to)
        if args.num_frames > d.num_frames:  # longer than the model: autoregressive windows (rollout.py)
            k = context_frames(cfg, args.num_context)
            return rollout(model, cfg, known_x[:, :k], args.num_frames, num_context=k, **kwargs)
        return generate(model, cfg, n, known=known, known_x=None if known is None else known_x, **kwargs)
    videos = sample_videos()
    image_videos = None
    if args.upsampler:  # base -> super-resolution stage(s); shown as [base, nearest-upsampled | output]
        from nano_videodiff.upsampler import run_cascade
        videos, image_videos = run_cascade(videos, args, device)
    if args.image_model:  # Video LDM Fig. 2: the same noise through the image model alone (alpha = 1)
        with model.backbone.image_model():  # every backbone declares it; those without an image model refuse
            image_videos = sample_videos()
    for what, result in (("the model", videos), ("the image model", image_videos)):
        if result is not None and not torch.isfinite(result).all():  # the weights are finite (load_model)
            raise UserError(f"sampling {what} gave NaN or infinite values; try --dtype=fp32, or a smaller "
                            "--cfg_scale or --S_churn")
    clear_old_samples(out_dir)

    # ---- pictures: [given | output | truth] per video ------------------------------------------------------
    panels = [videos] if image_videos is None else [image_videos, videos]
    if known is not None:
        panels = [show_known(known_x, known), *panels] + ([truth] if truth is not None else [])
    side_by_side = torch.cat(panels, dim=-1)  # concatenate along width
    for i in range(n):
        save_gif(out_dir / f"video_{i:03d}.gif", side_by_side[i], fps=d.fps)
    ncol = 1 if known is not None else (args.num_videos if captions else None)  # prompts: a row each
    save_gif(out_dir / "grid.gif", video_grid(side_by_side, ncol=ncol), fps=d.fps)
    save_png(out_dir / "grid.png", frames_grid(torch.stack(panels, 1).flatten(0, 1)), scale=2)

    # ---- numbers: PSNR/SSIM on the generated frames when the ground truth is known --------------------
    if truth is not None:
        generated = ~known.flatten(2).all(-1)  # (N, T): frames with anything generated
        frames_p, frames_t = videos[generated], truth[generated]
        scores = {"task": args.task, "num_videos": n,
                  "psnr": float(psnr(frames_p[:, None], frames_t[:, None]).mean()),
                  "ssim": float(ssim(frames_p[:, None], frames_t[:, None]).mean())}
        (out_dir / "metrics.json").write_text(json.dumps(scores, indent=2))
        print(f"{args.task}: PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.3f} over generated frames")
    if captions:
        report_alignment(videos, captions, cfg, out_dir)
    print(f"wrote {n} videos to {out_dir} (video_*.gif, grid.gif, grid.png)")
    return videos


if __name__ == "__main__":
    sys.exit(run_script(main))
