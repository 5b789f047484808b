"""Text-to-video at toy scale: guidance scale against text alignment and quality (Snap Video Fig. 5, where
CLIP score rises and FID first falls then rises with the guidance weight), and the text layers at paper size.

    python benchmarks/text_guidance.py --ckpt=out/physion_text/ckpt.pt --prompts=32 --scales=0,1,2,4
    python benchmarks/text_guidance.py                     # only the paper-size table (meta device)

Prompts: the captions of held-out toy Physion clips in the held-out phrasings (``toy_data/captions.py``), i.e.
sentences the model never saw, about clips it never saw. Each scale generates one clip per prompt from the
same noise; ``evaluation/text_alignment.py`` scores them: alignment (fraction of stated attributes shown),
its parts, chance (the prompts against the other clips) and quality (objects visible per frame). The
"true clips" row scores the held-out clips themselves against their captions (the metric's ceiling).
Scale 0 is the unconditional model (text dropped), 1 the conditional one, above 1 classifier-free guidance.
"""
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import attempt, load_average, machine_line  # noqa: E402
from nano_videodiff.training.config import parse_into, split_args  # noqa: E402

COLUMNS = ("alignment", "direction", "outcome", "colours", "chance", "quality")


@dataclass
class Args:
    ckpt: str = ""          # a text-to-video checkpoint (train.py --config=physion_text)
    prompts: int = 32       # held-out clips whose captions are the prompts
    scales: str = "0,1,2,4"  # guidance scales
    steps: int = 0          # sampler steps (0 = the checkpoint's)
    seed: int = 0
    data_seed: int = 0
    out: str = ""           # also write the rows as JSON here


def _row(name, report):
    return f"| {name} | " + " | ".join(f"{report[k]:.3f}" for k in COLUMNS) + " |"


def guidance_rows(model, cfg, num_prompts: int, scales, steps: int = 0, seed: int = 0, data_seed: int = 0):
    """{row name: alignment report}: the true clips, then one row per guidance scale."""
    import toy_data
    from nano_videodiff.evaluation.text_alignment import alignment_report
    from nano_videodiff.generation import generate
    from toy_data.captions import held_out_captions
    captions = held_out_captions(cfg.data, num_prompts, data_seed)
    d = Config_copy(cfg).data
    d.data_seed = data_seed
    truth = toy_data.get_batch(toy_data.build_dataset(d, "test"), range(num_prompts))["video"]
    rows = {"true clips": alignment_report(truth, captions)}
    for scale in scales:
        start = time.perf_counter()
        videos = generate(model, cfg, num_prompts, captions=captions, cfg_scale=scale, steps=steps, seed=seed,
                          batch_size=16)
        rows[f"guidance {scale:g}"] = dict(alignment_report(videos, captions), seconds=time.perf_counter() - start)
    return rows


def Config_copy(cfg):
    from nano_videodiff.training.config import Config
    return Config.from_dict(cfg.to_dict())


def guidance_table(rows) -> str:
    lines = ["| clips | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    return "\n".join(lines + [_row(name, r) for name, r in rows.items()])


def text_parameters(build, text_dim: int) -> int:
    """Parameters the text layers add to a backbone, counted on the meta device."""
    with torch.device("meta"):
        return sum(p.numel() for p in build(text_dim).parameters()) - sum(p.numel() for p in build(0).parameters())


def paper_text_table() -> str:
    """Text layers of the papers' backbones at full size, with their text encoders' token widths."""
    from nano_videodiff.backbones.fit import FIT, snapvideo_config
    from nano_videodiff.backbones.unet import UNet, unet_config
    from nano_videodiff.backbones.walt import WALT, walt_config
    rows = [  # (model, text encoder, token width, how it reads text, builder)
        ("Snap Video FIT 500M", "T5-11B", 4096, "conditioning tokens read by the latents",
         lambda t: FIT(**snapvideo_config("snapvideo_500m"), text_dim=t)),
        ("Snap Video FIT 3.9B", "T5-11B", 4096, "conditioning tokens read by the latents",
         lambda t: FIT(**snapvideo_config("snapvideo_3.9b"), text_dim=t)),
        ("W.A.L.T-XL", "T5-XL", 2048, "attention over [block tokens; text]",
         lambda t: WALT(**walt_config("walt_xl"), text_dim=t)),
        ("U-Net 284M (Snap Video baseline)", "T5-11B", 4096, "cross-attention after self-attention",
         lambda t: UNet(**unet_config("unet_284m"), text_dim=t)),
    ]
    lines = ["| backbone | text encoder | token width | text read by | text-layer parameters |", "|---|---|---|---|---|"]
    for name, encoder, width, how, build in rows:
        count = attempt(text_parameters, build, width)
        cell = count if isinstance(count, str) else f"{count / 1e6:.1f}M"
        lines.append(f"| {name} | {encoder} | {width} | {how} | {cell} |")
    return "\n".join(lines)


def main(argv=None):
    values, _ = split_args(sys.argv[1:] if argv is None else argv)
    args = parse_into(Args(), values)
    print(f"{machine_line()}; {load_average()}\n")
    print("Text layers at paper size (meta device, no memory):\n")
    print(paper_text_table())
    if not args.ckpt:
        print("\n(no --ckpt: the guidance table needs a text-to-video checkpoint, e.g. out/physion_text/ckpt.pt)")
        return None
    from nano_videodiff.models import load_model
    model, cfg = load_model(args.ckpt)
    scales = [float(s) for s in args.scales.split(",") if s]
    rows = guidance_rows(model, cfg, args.prompts, scales, args.steps, args.seed, args.data_seed)
    print(f"\nGuidance scale vs text alignment and quality ({args.prompts} held-out prompts, {args.ckpt}):\n")
    print(guidance_table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
