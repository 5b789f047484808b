"""The benchmark suite (benchmarks/suite.py, benchmarks/scaling.py) runs end to end and writes its tables.

Behaviour only: the tests check that every section and every backbone is measured and reported, that a
failure becomes an "error: ..." cell instead of stopping the suite, and the small formulas; no test depends
on a timing. The suite runs once, in its "tiny" mode (the smallest sizes at which every code path runs).
"""
import re

import pytest

from benchmarks import scaling, suite
from benchmarks.common import Error
from nano_videodiff.backbones import BACKBONES


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    text = suite.main(["--tiny", "--threads=1", f"--out={out}"])
    return out, text


def section_text(markdown: str, title: str) -> str:
    """The body of section ``title`` (up to the next "## " header)."""
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(text: str) -> list:
    """Every markdown table row of ``text`` (not the header separators) as a list of cells."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")]


def test_suite_writes_every_section_without_errors(tiny_run):
    out, text = tiny_run
    markdown = (out / "suite.md").read_text()
    assert markdown == text
    for title in suite.SECTIONS:
        assert f"\n## {title}\n" in markdown
    assert "error:" not in markdown
    assert re.search(r"load average.*\(before\)", markdown) and re.search(r"load average.*\(after;", markdown)
    assert "command: `python benchmarks/suite.py --tiny --threads=1" in markdown
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](scaling.png)" in markdown  # the plot, linked relative to suite.md


def test_suite_tables_cover_every_comparison_and_backbone(tiny_run):
    markdown = tiny_run[1]
    peaks = {row[0]: row for row in table_rows(section_text(markdown, "Machine and matmul peak"))}
    assert set(peaks) >= {"fp32", "bf16"} and float(peaks["bf16"][2]) > 0

    fit_rows = table_rows(section_text(markdown, "FIT vs U-Net"))
    assert [row[0] for row in fit_rows[1:]] == ["2x16x16"]  # one clip in tiny mode
    assert "3.31x" in section_text(markdown, "FIT vs U-Net")  # the paper's claim beside the measurement

    window_rows = table_rows(section_text(markdown, "Window vs full attention"))[1:]
    assert {(row[0], row[3]) for row in window_rows} == {(dtype, layout) for dtype in ("fp32", "bf16")
                                                        for layout in ("windows", "ST = clip", "full")}
    assert all(row[5] == "1.00" for row in window_rows if row[3] == "windows")  # ratios to windows

    mfu_rows = table_rows(section_text(markdown, "MFU per backbone"))
    assert [row[0] for row in mfu_rows[1:]] == list(BACKBONES)
    for row in mfu_rows[1:]:
        assert re.fullmatch(r"\d+\.\d%", row[5]) and re.fullmatch(r"\d+\.\d%", row[8])  # fp32 and bf16 MFU

    scaling_rows = table_rows(section_text(markdown, "Scaling"))
    for backbone in BACKBONES:  # both sweeps and the table of architectures
        assert sum(row[0] == backbone for row in scaling_rows) == 3


def test_a_failing_section_is_reported_in_its_place():
    text = suite.section("Broken", lambda: 1 / 0)
    assert text.startswith("## Broken\n") and "error: ZeroDivisionError" in text


def test_a_failing_measurement_becomes_error_cells():
    result = scaling.measure_backbone("no_such_backbone", 2, 16, 1, ["fp32"], repeats=1)
    assert isinstance(result["params"], Error) and isinstance(result["fp32"]["ms"], Error)
    table = scaling.sweep_table({"broken": [result["fp32"]] * 2}, [(2, 16), (4, 16)], [2, 4], "T")
    assert table_rows(table)[1][0] == "broken" and "error: ValueError: no toy configuration" in table


def test_exponent_from_the_end_points():
    assert scaling.exponent([2, 4, 8], [3.0, 100.0, 12.0]) == pytest.approx(1.0)
    assert scaling.exponent([16 * 16, 64 * 64], [1.0, 256.0]) == pytest.approx(2.0)
    assert isinstance(scaling.exponent([1, 2], [Error("error: x"), 1.0]), Error)


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_toy_config_is_the_backbone_in_pixel_space_at_the_asked_size(backbone):
    cfg = scaling.toy_config(backbone, frames=8, resolution=64, batch_size=3)
    assert cfg.model.backbone == backbone
    assert (cfg.data.num_frames, cfg.data.size, cfg.data.channels, cfg.optim.batch_size) == (8, (64, 64), 3, 3)
    assert cfg.data.autoencoder == "" and cfg.run.init_from == ""  # nothing to load from disk
    if backbone == "fit":  # 4 groups at every size, as the bouncing_balls_fit preset
        assert cfg.model.fit_group_h == cfg.model.fit_group_w == 64 // cfg.model.patch_size // 2
    if backbone in ("unet", "videoldm"):  # attention at 1/4 of the frame, as the presets' 8 px at 32 px
        assert cfg.model.unet_attn_resolutions == "16"


def test_over_seeds_gives_mean_and_spread_and_passes_errors_on():
    from benchmarks.common import over_seeds, parse_seeds, spread
    scores = {0: 1.0, 1: 3.0}
    row = over_seeds(lambda seed: {"psnr": scores[seed], "name": "a"}, parse_seeds("0,1"), ("psnr",))
    assert row["psnr"] == pytest.approx((2.0, 2 ** 0.5)) and row["name"] == "a" and row["seeds"] == 2
    assert spread(row["psnr"], ".1f") == "2.0 ± 1.4" and spread((2.0, 0.0), ".1f") == "2.0"
    assert parse_seeds("") == [None]

    def failing(seed):
        raise RuntimeError("boom")
    assert "boom" in over_seeds(failing, [0, 1], ("psnr",))["error"]
