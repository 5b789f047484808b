"""Configs: typed dataclasses in sections, and the one ``--key=value`` parser of every script.

A run is described by one ``Config`` with six sections (data, diffusion, model, task, optim, run). Field names
are unique across sections, so the command line can say ``--depth=6`` (or ``--model.depth=6``).
The resolved config is printed at start and saved in every checkpoint as a plain dict, from which
``sample.py`` rebuilds the model (``Config.from_dict`` rejects unknown keys with a clear error).

This module is a leaf: it imports nothing of the package but ``errors`` (a leaf too). Presets (``presets.py``,
``paper_configs.py``) are functions returning a full Config; they import this module, and ``presets.resolve``
turns a command line into a Config.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Tuple

from ..errors import UserError


@dataclass
class DataConfig:
    dataset: str = "bouncing_balls"   # bouncing_balls | physion | moving_mnist (toy_data/__init__.py) |
                                      # videos: your own clips under --data_root (docs/own_videos.md) |
                                      # webdataset: shards written by `python -m nano_videodiff.data.shards`
    scenario: str = "collide"         # physion: one of toy_data.physion.SCENARIOS, or "all"
    num_frames: int = 16              # T
    height: int = 32                  # H in pixels (--resolution=N is shorthand for --height=N --width=N)
    width: int = 32                   # W in pixels (Snap Video's first stage: 36x64, H x W)
    channels: int = 3                 # C
    num_balls: int = 2                # bouncing_balls: discs per clip; moving_mnist: digits per clip
    ball_speed: float = 1.0           # bouncing_balls: speed x this (0.25: the same motion filmed 4x faster)
    fps: float = 8.0                  # frames per second of the clips; the model sees 1/fps (videos: only
                                      # for frame folders; video files have their own)
    num_classes: int = 0              # labels (e.g. scenarios); 0 = unconditional model
    data_seed: int = 0                # which procedural clips make up the training set
    num_train_clips: int = 0          # 0 = a fresh clip for every sample; N = cycle over N fixed clips
    num_test_clips: int = 256         # held-out clips for previews and evaluation (physion)
    cache_dir: str = ""               # physion: where simulated clips are cached ("" = ~/.cache/nano_videodiff)
    data_root: str = ""               # moving_mnist: folder holding the MNIST files ("" = offline glyphs);
                                      # videos: a folder of clips, or a .csv/.jsonl manifest;
                                      # webdataset: shards, e.g. "dir/shards-{000000..000009}.tar", a folder or a tar
    test_data_root: str = ""          # webdataset: held-out shards for previews and evaluation ("" = data_root's)
    latent_shards: str = ""           # latent diffusion: latents cached by `python -m nano_videodiff.data.shards
                                      # encode` (read instead of encoding the clips; data/shards.py)
    val_fraction: float = 0.05        # videos: share of clips held out (by a hash of their path) for previews
    num_workers: int = 0              # DataLoader processes decoding the next steps' clips (0 = in the loop)
    # Snap Video Sec. 3.3 (modality.py): joint image+video training and variable frame rate
    image_fraction: float = 0.0       # share of each batch that is images as infinite-fps videos (Snap: 0.5)
    image_scenario: str = ""          # physion: take the images from these scenarios ("" = the training clips)
    max_frame_stride: int = 1         # variable frame rate: stride k in 1..max per clip, interval k/fps
    train_window: int = 0             # train on random windows of this many consecutive frames (0 = whole
                                      # clips): a convolutional autoencoder learns as well from short windows
    # W.A.L.T Sec. 4.1 (latent.py): diffusion in the latent space of a trained causal autoencoder
    autoencoder: str = ""             # its checkpoint (train.py --backbone=causal_vae); "" = pixel space;
                                      # "{out_dir}" in it is replaced by --out_dir
    autoencoder_preset: str = ""      # train the autoencoder first with this preset if its checkpoint is missing

    @property
    def size(self) -> Tuple[int, int]:
        """(H, W) of the frames."""
        return self.height, self.width


@dataclass
class DiffusionConfig:
    sigma_data: float = 0.5           # EDM's data std (Snap Video uses 1.0)
    sigma_in: float = 1.0             # Snap Video's input scaling; 1 = plain EDM; 0 = auto: s*sqrt(T)
    sigma_in_base_h: int = 36         # auto sigma_in: s^2 = H W / (base_h base_w) (Snap Video: 64x36)
    sigma_in_base_w: int = 64
    P_mean: float = -1.2              # training noise: ln(sigma) ~ N(P_mean, P_std^2) (EDM Table 1)
    P_std: float = 1.2
    label_dropout: float = 0.1        # probability of dropping the label (classifier-free guidance)
    sample_steps: int = 24            # sampler steps N (Heun: 2N-1 network calls)
    solver: str = "heun"              # "heun" or "euler"
    sigma_min: float = 0.002          # EDM Eq. 5 schedule
    sigma_max: float = 80.0
    rho: float = 7.0


@dataclass
class ModelConfig:
    backbone: str = "vdt"             # see nano_videodiff/backbones/__init__.py
    dim: int = 128                    # token width D
    depth: int = 4                    # transformer blocks
    heads: int = 4                    # attention heads
    patch_size: int = 4               # p: each frame is cut into p x p patches
    mlp_ratio: float = 4.0            # MLP hidden width = mlp_ratio * D
    qk_norm: bool = True              # RMS-normalise queries/keys (W.A.L.T Sec. 4.3)
    conditioning: str = "concat"      # how known frames reach the model: concat | adaln | cross_attention (VDT)
    # FIT only (fit.py; Snap Video Sec. 3.4): latents, groups and layers. 0 = "same as dim/heads".
    fit_num_latents: int = 64         # latent tokens, split evenly over the groups
    fit_latent_dim: int = 0           # latent width (0 = dim)
    fit_latent_heads: int = 0         # latent attention heads (0 = heads)
    fit_group_h: int = 4              # a group = all frames x (fit_group_h x fit_group_w) patches
    fit_group_w: int = 4
    fit_global_layers: int = 2        # self-attention layers over all latents, per block
    fit_local_layers: int = 0         # FIT's local layers within each group (Snap Video: 0)
    fit_cond_dim: int = 0             # width of the conditioning tokens (0 = dim)
    fit_dropout: float = 0.0          # dropout in the feed-forwards
    fit_self_cond_prob: float = 0.9   # RIN latent self-conditioning rate in training (0 disables)
    # --- W.A.L.T (window_attention.py, walt.py; W.A.L.T Sec. 4.2-4.3) ---
    walt_window_t: int = 0            # spatiotemporal window in latent frames (0 = all frames, the paper's 1+t)
    walt_window_h: int = 4            # spatiotemporal window height in tokens (paper: 8 of 16)
    walt_window_w: int = 4            # spatiotemporal window width in tokens
    adaln_lora_rank: int = 2          # AdaLN-LoRA rank r (Eq. 3); 0 = a separate full adaLN per block
    # --- causal 3D autoencoder (causal_vae.py; W.A.L.T Sec. 4.1) ---
    vae_channels: int = 32            # base width of the encoder/decoder (paper: 128)
    vae_channel_mult: str = "1,2"     # width multiplier per resolution level (paper: 1,2,2,4)
    vae_latent_channels: int = 4      # c (paper: 8)
    vae_spatial_down: int = 4         # f_s = H/h (paper: 8)
    vae_temporal_down: int = 2        # f_t: 1 + f_t*k frames -> 1 + k latent frames (paper: 4)
    vae_kl_weight: float = 1e-6       # weight of the KL term that keeps the latent well-behaved
    # --- U-Net and Video LDM (unet.py, temporal_alignment.py; Video LDM Sec. 3.1) ---
    unet_channels: int = 64           # base width (ADM: 128-256)
    unet_channel_mult: str = "1,2,2"  # width multiplier per resolution level
    unet_num_res_blocks: int = 2      # residual blocks per level
    unet_attn_resolutions: str = "8"  # feature-map sizes (pixels) that get self-attention, comma-separated
    unet_dropout: float = 0.0
    freeze_image_model: bool = True   # videoldm: train only the temporal layers (Video LDM Sec. 3.1)
    vldm_temporal_conv: bool = True   # videoldm: 3D-conv residual blocks after the U-Net's ResBlocks
    vldm_context: bool = True         # videoldm: the context encoder that feeds given frames to them
    num_stages: int = 0               # Video LDM's interpolation stack: rates told apart by a learned stage
                                      # embedding (2: T -> 4T and 4T -> 16T; interpolation.py); 0 = none
    # --- text (text.py; toy_data/captions.py): captions from the simulator, read as each paper reads text ---
    text_encoder: str = ""            # "" = no text | learned (trained jointly) | minilm (frozen, [minilm] extra) |
                                      # hf (a frozen Hugging Face encoder from --text_encoder_path, [text] extra)
    text_encoder_path: str = ""       # hf: a local model folder (e.g. a T5 encoder's)
    text_dim: int = 64                # learned encoder: token width
    text_depth: int = 2               # learned encoder: transformer layers
    text_heads: int = 4               # learned encoder: attention heads
    text_max_len: int = 32            # tokens per caption (longer captions are cut)
    walt_text_attention: str = "concat"  # walt: keys/values [block tokens; text] (Sec. 4.3) | cross (text only)
    # super-resolution stage of a cascade (nano_videodiff/upsampler.py): conditioned on an H/f x W/f video
    sr_factor: int = 1                # f; 1 = not an upsampler
    sr_input: str = "bilinear"        # how the low-res video enters: bilinear | nearest | depth_to_space
    sr_aug_max: float = 0.5           # training noise augmentation of the low-res video: sigma ~ U(0, max)
    sr_crop: int = 0                  # train on random crops of this many pixels (Video LDM); 0 = whole frames


@dataclass
class OptimConfig:
    optimizer: str = "adamw"          # adamw | lamb (Snap Video trains FIT with LAMB: lr 5e-3, betas 0.9/0.99)
    batch_size: int = 16              # global batch (split across DDP ranks)
    max_steps: int = 2000             # optimizer steps
    lr: float = 1e-3                  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.1         # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 100           # linear warm-up from 0
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0            # max global gradient norm; 0 disables
    grad_accum_steps: int = 1         # micro-batches per optimizer step (same result, less memory)
    ema_halflife: float = 200.0       # EMA half-life in optimizer steps (with a warm-up, see train.py)


@dataclass
class TaskConfig:
    masking: str = "none"             # none (unconditional) | vdt (VDT's task mixture) | one task name of
                                      # masking.TASKS (e.g. predict): what the model learns to do
    num_context: int = 0              # context frames for predict/backward; 0 = T // 2 (VDT: 8 of 16)
    context_dropout: float = 0.0      # drop all context w.p. p (the context-free branch for guidance)


@dataclass
class RunConfig:
    out_dir: str = "out"              # checkpoints, log.jsonl, loss.png, previews/
    seed: int = 1337                  # training randomness (noise, sigma, label dropout)
    device: str = "auto"              # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"               # auto (bf16 where it is fast: hardware.py) | bf16 (autocast, fp32 master
                                      # weights) | fp16 (CUDA, grad scaler) | fp32
    compile: bool = False             # torch.compile the backbone
    parallel: str = "ddp"             # under torchrun: ddp (replicate) | fsdp (shard parameters, FSDP2)
    activation_checkpointing: bool = False  # recompute each block's activations in backward (less memory)
    log_every: int = 10               # steps between log.jsonl lines
    log: str = "jsonl"                # jsonl (log.jsonl) | tensorboard (also OUT_DIR/tensorboard/; run_log.py)
    ckpt_every: int = 500             # steps between checkpoints (also saved at the end)
    preview_every: int = 500          # steps between preview GIFs; 0 disables
    num_preview: int = 4              # videos per preview
    preview_steps: int = 16           # sampler steps for previews
    resume: bool = False              # continue from out_dir/ckpt.pt
    overwrite: bool = False           # allow starting a new run in an out_dir that has a checkpoint
    max_minutes: float = 0.0          # stop (and checkpoint) after this wall time; 0 = no limit
    stop_at_step: int = 0             # stop (and checkpoint) at this step, schedule unchanged; 0 = max_steps
    init_from: str = ""               # start the model from this checkpoint (e.g. an image model for videoldm)


SECTIONS = {"data": DataConfig, "diffusion": DiffusionConfig, "model": ModelConfig,
            "task": TaskConfig, "optim": OptimConfig, "run": RunConfig}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Dict[str, Any]]) -> "Config":
        """Rebuild from ``to_dict`` output; unknown sections or keys, or values of the wrong type, are an
        error (a saved config is data from a file); missing keys default."""
        if not isinstance(d, dict):
            raise UserError(f"a config is a dict of sections, got {type(d).__name__}")
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise UserError(f"unknown config sections {sorted(unknown)}; valid: {sorted(SECTIONS)}")
        parts = {}
        for name, section in SECTIONS.items():
            values = d.get(name, {})
            if not isinstance(values, dict):
                raise UserError(f"config section '{name}' is a {type(values).__name__}, not a dict of values")
            valid = {f.name: f for f in fields(section)}
            if name == "data":
                values = square_to_height_width(values)
            bad = set(values) - set(valid)
            if bad:
                raise UserError(f"unknown keys {sorted(bad)} in config section '{name}'; valid: {sorted(valid)}. "
                                "Was this checkpoint written by a newer version of nano-videodiff?")
            parts[name] = section(**{key: typed_value(value, valid[key].type, f"{name}.{key}")
                                     for key, value in values.items()})
        return cls(**parts)

    def validate(self) -> "Config":
        """Catch inconsistent settings before any work starts, with a message that says what to change."""
        for ok, message in self._positive_checks():  # first: the checks below divide by some of these
            if not ok:
                raise UserError(message)
        d, m, t, o, r = self.data, self.model, self.task, self.optim, self.run
        down = m.vae_spatial_down if d.autoencoder else 1
        model_h, model_w = d.height // down, d.width // down
        checks = [
            (r.dtype in ("auto", "bf16", "fp16", "fp32"), f"--dtype must be auto, bf16, fp16 or fp32, got {r.dtype!r}"),
            (r.parallel in ("ddp", "fsdp"), f"--parallel must be ddp or fsdp, got {r.parallel!r}"),
            (r.log in ("jsonl", "tensorboard"), f"--log must be jsonl or tensorboard, got {r.log!r}"),
            (o.grad_accum_steps >= 1, f"--grad_accum_steps must be >= 1, got {o.grad_accum_steps}"),
            (not (m.backbone == "videoldm" and m.freeze_image_model and not r.init_from and not r.resume),
             "--backbone=videoldm freezes the image model: pass --init_from=<image model ckpt.pt> (train one "
             "with --config=unet_frames), or --freeze_image_model=false to train everything"),
            (o.optimizer in ("adamw", "lamb"), f"--optimizer must be adamw or lamb, got {o.optimizer!r}"),
            (d.num_frames >= 1 and d.height >= 1 and d.width >= 1, "--num_frames, --height and --width must be positive"),
            (m.backbone == "causal_vae" or (model_h % m.patch_size == 0 and model_w % m.patch_size == 0),
             f"the model's input ({model_h}x{model_w} pixels{' of latents' if d.autoencoder else ''}) must be "
             f"divisible by --patch_size={m.patch_size} in both directions"),
            (t.num_context < d.num_frames,
             f"--num_context={t.num_context} leaves nothing to generate with --num_frames={d.num_frames}"),
            (0.0 <= d.image_fraction <= 1.0, f"--image_fraction must be in [0, 1], got {d.image_fraction}"),
            (d.max_frame_stride >= 1, f"--max_frame_stride must be >= 1, got {d.max_frame_stride}"),
            (d.dataset != "videos" or bool(d.data_root),
             "--dataset=videos needs --data_root=<a folder of videos, or a .csv/.jsonl manifest>"),
            (0.0 < d.val_fraction < 1.0, f"--val_fraction must be in (0, 1), got {d.val_fraction}"),
            (d.num_workers >= 0, f"--num_workers must be >= 0, got {d.num_workers}"),
            (d.num_workers == 0 or (d.image_fraction == 0 and (d.max_frame_stride == 1 or d.dataset == "videos")),
             "--num_workers loads plain clips; with --image_fraction (or toy data with --max_frame_stride) "
             "use --num_workers=0"),
            (0 <= d.train_window <= d.num_frames, f"--train_window must be in 0..num_frames={d.num_frames}"),
            (d.train_window == 0 or (not d.autoencoder and d.image_fraction == 0 and d.max_frame_stride == 1
                                     and t.masking == "none"),
             "--train_window crops plain clips for models without given frames (e.g. the autoencoder): it does "
             "not combine with --autoencoder, --image_fraction, --max_frame_stride or --masking"),
            (self.diffusion.sigma_in >= 0, "--sigma_in must be > 0 (or 0 for auto: s*sqrt(T))"),
            (0.0 <= self.diffusion.label_dropout <= 1.0, "--label_dropout must be in [0, 1]"),
            (o.batch_size >= 1 and o.max_steps >= 0, "--batch_size must be >= 1 and --max_steps >= 0"),
        ]
        from ..upsampler import config_checks  # the super-resolution stage's own settings
        checks += config_checks(self)
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        return self

    def _positive_checks(self) -> List[Tuple[bool, str]]:
        """Counts and sizes that must be >= 1 (0 would divide by zero or build an empty model), and others >= 0."""
        d, m, o, r = self.data, self.model, self.optim, self.run
        at_least_one = {"ckpt_every": r.ckpt_every, "log_every": r.log_every, "patch_size": m.patch_size,
                        "heads": m.heads, "dim": m.dim, "depth": m.depth, "num_preview": r.num_preview,
                        "preview_steps": r.preview_steps, "sample_steps": self.diffusion.sample_steps,
                        "channels": d.channels, "num_test_clips": d.num_test_clips}
        at_least_zero = {"preview_every": r.preview_every, "stop_at_step": r.stop_at_step,
                         "max_minutes": r.max_minutes, "num_train_clips": d.num_train_clips,
                         "num_context": self.task.num_context, "warmup_steps": o.warmup_steps,
                         "grad_clip": o.grad_clip, "lr": o.lr, "weight_decay": o.weight_decay}
        checks = [(value >= 1, f"--{name} must be >= 1, got {value}") for name, value in at_least_one.items()]
        checks += [(value >= 0, f"--{name} must be >= 0, got {value}") for name, value in at_least_zero.items()]
        return checks + [
            (d.fps > 0, f"--fps must be > 0 (frames per second of the clips), got {d.fps}"),
            (o.ema_halflife > 0, f"--ema_halflife must be > 0 steps, got {o.ema_halflife}"),
            (0.0 <= self.task.context_dropout <= 1.0, "--context_dropout must be in [0, 1]"),
            (m.heads < 1 or m.dim % m.heads == 0, f"--dim={m.dim} must be divisible by --heads={m.heads}"),
        ]

    def describe(self) -> str:
        lines = []
        for name in SECTIONS:
            lines.append(f"[{name}]")
            for f in fields(getattr(self, name)):
                lines.append(f"  {f.name} = {getattr(getattr(self, name), f.name)!r}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Command-line overrides
# ----------------------------------------------------------------------------------------------

def field_index() -> Dict[str, Tuple[str, dataclasses.Field]]:
    """Map every field name (and 'section.name') to (section, field). Names must be unique."""
    index: Dict[str, Tuple[str, dataclasses.Field]] = {}
    for section_name, section in SECTIONS.items():
        for f in fields(section):
            if f.name in index:
                raise RuntimeError(f"config field {f.name!r} appears in two sections")
            index[f.name] = (section_name, f)
            index[f"{section_name}.{f.name}"] = (section_name, f)
    return index


TYPES = {"int": int, "float": float, "bool": bool, "str": str}  # the annotations are strings (__future__)


def typed_value(value, typ, key: str):
    """A value read from a saved config, checked against its field's type (an int is a float too)."""
    typ = TYPES.get(typ, typ)
    if typ is float and type(value) is int:
        return float(value)
    if type(value) is not typ:  # exact: True is an int to isinstance, not a depth
        raise UserError(f"config value {key}={value!r} has type {type(value).__name__}, expected {typ.__name__}")
    if typ is float and not math.isfinite(value):
        raise UserError(f"config value {key}={value!r} is not a finite number")
    return value


def parse_value(text: str, typ, key: str):
    """Convert a command-line string to the field's type, with an error that says what was expected."""
    typ = TYPES.get(typ, typ)
    if typ is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UserError(f"--{key} expects a boolean (true/false), got {text!r}")
    try:
        if typ is int:
            return int(text)
        if typ is float:
            value = float(text)
            if not math.isfinite(value):  # float() accepts "nan" and "inf": no setting means either
                raise ValueError
            return value
    except ValueError:
        raise UserError(f"--{key} expects {typ.__name__}{' (a finite number)' if typ is float else ''}, "
                        f"got {text!r}") from None
    return text


SQUARE_SHORTHAND = ("resolution", "data.resolution")  # --resolution=N: --height=N --width=N


def square_to_height_width(values: Dict[str, Any]) -> Dict[str, Any]:
    """A data section written before frames could be non-square has one ``resolution`` (H = W): read it as
    height and width, so older checkpoints keep loading. Both forms at once are contradictory."""
    if "resolution" not in values:
        return values
    if "height" in values or "width" in values:
        raise UserError("a config gives both resolution and height/width; give height and width only")
    values = dict(values)
    side = values.pop("resolution")
    return {**values, "height": side, "width": side}


def apply_overrides(cfg: Config, overrides: Dict[str, str]) -> List[str]:
    """Set fields from ``{key: string}``; returns the canonical 'section.field' names changed.

    ``--resolution=N`` is shorthand for square frames (``--height=N --width=N``), applied first, so
    ``--resolution=64 --height=36`` means 36x64."""
    index = field_index()
    changed = []
    overrides = dict(overrides)
    for key in SQUARE_SHORTHAND:
        if key in overrides:
            side = parse_value(overrides.pop(key), "int", key)
            cfg.data.height = cfg.data.width = side
            changed += ["data.height", "data.width"]
    for key, text in overrides.items():
        if key not in index:
            valid = sorted(k for k in index if "." not in k)
            raise UserError(f"unknown config key --{key}. Valid keys: {', '.join(valid)} "
                             "(see python train.py --help)")
        section, f = index[key]
        setattr(getattr(cfg, section), f.name, parse_value(text, f.type, key))
        changed.append(f"{section}.{f.name}")
    return changed


def split_args(argv: List[str]) -> Tuple[Dict[str, str], bool]:
    """The one command-line parser of every script: ``--key=value ... [-h]`` -> ({key: value}, wants_help).

    A bare ``--flag`` means ``--flag=true`` (for booleans such as --resume). Values stay strings; the
    dataclass field a key names gives its type (``apply_overrides``, ``parse_into``).
    """
    values, wants_help = {}, False
    for arg in argv:
        if arg in ("-h", "--help"):
            wants_help = True
            continue
        if not arg.startswith("--"):
            raise UserError(f"arguments look like --key=value; got {arg!r}")
        key, eq, value = arg[2:].partition("=")
        values[key] = value if eq else "true"
    return values, wants_help


def parse_into(options, values: Dict[str, str]):
    """Set the fields of a dataclass instance (a script's options, e.g. sample.py's) from ``split_args``'s
    strings, each converted to its field's type; an unknown key is an error that lists the valid ones."""
    valid = {f.name: f for f in fields(options)}
    for key, text in values.items():
        if key not in valid:
            raise UserError(f"unknown option --{key}. Valid: {', '.join(valid)}")
        setattr(options, key, parse_value(text, valid[key].type, key))
    return options


def _field_lines(options, indent: str) -> List[str]:
    """One line per field of a dataclass instance: ``--name=<type>  (default value)``."""
    lines = []
    for f in fields(options):
        tname = f.type if isinstance(f.type, str) else f.type.__name__  # a string under __future__ annotations
        lines.append(f"{indent}--{f.name}=<{tname}>  (default {getattr(options, f.name)!r})")
    return lines


def options_help(options, usage: str) -> str:
    """``usage``, then every option of a script's dataclass with its default (``python sample.py --help``)."""
    return "\n".join([usage, *_field_lines(options, "  ")])


def fields_help(cfg: Config) -> str:
    """Every config field with its value in ``cfg``, section by section (``python train.py --help``)."""
    lines = []
    for name in SECTIONS:
        lines += [f"  [{name}]", *_field_lines(getattr(cfg, name), "    ")]
        if name == "data":
            lines.append("    --resolution=<int>  (shorthand: --height and --width both, square frames)")
    return "\n".join(lines)


_ = typing  # the annotations above are strings (from __future__); parse_value maps them to types
