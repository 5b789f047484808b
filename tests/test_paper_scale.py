"""benchmarks/paper_scale.py runs on this CPU in its reduced mode and reports every column (no timing is
asserted: the numbers depend on the machine)."""
import re

import pytest

from benchmarks import paper_scale


def rows(text: str, title: str) -> dict:
    body = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in body.splitlines()
             if line.startswith("|") and not line.startswith("|---")]
    return {row[0]: row for row in cells[1:]}


def test_reduced_mode_reports_step_time_memory_and_mfu(tmp_path):
    out = tmp_path / "paper_scale.md"
    text = paper_scale.main(["--presets=vdt_s2,walt_vae", "--steps=1", "--comparison=false", f"--out={out}"])
    assert out.read_text() == text and "error:" not in text
    table = rows(text, "Paper presets (reduced")
    assert set(table) == {"vdt_s2", "walt_vae"}
    for row in table.values():
        assert all(re.fullmatch(r"\d+(\.\d+)?", cell) for cell in row[1:]), row
        assert float(row[2]) > 0 and float(row[3]) > 0 and float(row[4]) > 0


@pytest.mark.slow  # the U-Net at Snap Video's 16 x 40 x 64 input, even narrow, takes ~20 s a step here
def test_snap_video_comparison_at_the_papers_shapes():
    text = paper_scale.main(["--presets=snapvideo_500m", "--steps=1"])
    table = rows(text, "Snap Video: FIT 500M vs the 284M U-Net")
    assert set(table) == {"training", "inference"} and "error:" not in text
    assert table["training"][4] == "3.31" and table["inference"][4] == "4.49"
    assert float(table["training"][3]) > 0 and float(table["inference"][3]) > 0
