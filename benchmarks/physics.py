"""Toy Physion benchmarks: how fast clips are generated (and, later, how well models predict them).

    python benchmarks/physics.py            # prints markdown tables; never fails

`generation_speed_table` times `toy_data.physion.generate_clip` (simulation with pymunk plus
anti-aliased rendering) per scenario and resolution, single process, and reports clips per second.
A failure in one cell is printed in that cell instead of stopping the run.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _clips_per_second(scenario, resolution, num_frames, clips, budget):
    from toy_data.physion import generate_clip
    generate_clip(scenario, 0, num_frames=num_frames, resolution=resolution)  # warm-up
    start, done = time.perf_counter(), 0
    while done < clips and (done == 0 or time.perf_counter() - start < budget):
        generate_clip(scenario, 1 + done, num_frames=num_frames, resolution=resolution)
        done += 1
    return done / (time.perf_counter() - start)


def generation_speed_table(resolutions=(32, 64), num_frames=16, clips=20, budget=3.0):
    """Markdown table: clips/second for every scenario (rows) at each resolution (columns), each
    cell measured over up to `clips` clips or `budget` seconds, whichever ends first."""
    try:
        from toy_data.physion import SCENARIOS
    except Exception as e:  # the benchmark must print something rather than crash
        return f"toy Physion unavailable: {type(e).__name__}: {e}"
    cols = [f"{r}x{r}x{num_frames} clips/s" for r in resolutions]
    lines = ["| scenario | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for scenario in SCENARIOS:
        cells = []
        for r in resolutions:
            try:
                cells.append(f"{_clips_per_second(scenario, r, num_frames, clips, budget):.1f}")
            except Exception as e:
                cells.append(f"error: {type(e).__name__}")
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    print("## Toy Physion generation speed (one process, simulate + render)\n")
    try:
        print(generation_speed_table())
    except Exception as e:  # never fail
        print(f"generation benchmark failed: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
