"""Regenerate the toy Physion GIFs of docs/toy_data.md: python docs/make_physion_gifs.py (a few seconds).

Each GIF shows one scenario at 64x64, 16 frames at 10 fps: a clip where the red agent touches the
yellow patient (left) and one where it does not (right), both simulated by pymunk.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nano_videodiff.evaluation.video_io import save_gif, video_grid  # noqa: E402
from toy_data.physion import SCENARIOS, generate_clip  # noqa: E402

for scenario in SCENARIOS:
    clips = [torch.as_tensor(generate_clip(scenario, seed=3, num_frames=16, resolution=64, want_contact=want)["video"])
             for want in (True, False)]
    path = save_gif(Path(__file__).parent / "physion" / f"{scenario}.gif", video_grid(torch.stack(clips), ncol=2),
                    fps=10, scale=2)
    print(path)
