"""The offline learned-feature distance (evaluation/toy_features.py) and its shipped checkpoint."""
import pytest
import torch

from nano_videodiff import shipped
from nano_videodiff.errors import MissingFile, UserError
from nano_videodiff.evaluation import distances, toy_features

ENTRY = shipped.read_manifest()[toy_features.NAME]


def test_features_of_any_clip_length_size_and_channels():
    torch.manual_seed(0)
    net = toy_features.ToyVideoNet().eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 16, 3, 32, 32)).shape == (2, toy_features.FEATURE_DIM)
        grey = torch.rand(3, 8, 1, 36, 64) * 2 - 1  # short, grey, non-square: resized to 32 x 32, RGB
        assert net(grey).shape == (3, toy_features.FEATURE_DIM)
        assert torch.allclose(net(grey), net(grey.expand(-1, -1, 3, -1, -1)))
        out = net.predict(torch.zeros(2, 16, 3, 32, 32))
    assert out["scenario"].shape == (2, 8) and out["speed"].shape == (2, 2) and out["in_order"].shape == (2,)


def test_shuffled_frames_are_a_permutation_never_the_true_order():
    video = torch.arange(4 * 5).float().view(4, 5, 1, 1, 1).expand(4, 5, 1, 2, 2)
    shuffled = toy_features.shuffle_frames(video, torch.Generator().manual_seed(0))
    for clip, orig in zip(shuffled, video):
        values = clip[:, 0, 0, 0]
        assert sorted(values.tolist()) == orig[:, 0, 0, 0].tolist() and not torch.equal(clip, orig)


def test_mean_speeds_of_known_motion():
    states = torch.zeros(1, 4, 3, 6)
    states[0, :, 0, 3:5] = torch.tensor([3.0, 4.0])  # the agent at 5 px per frame
    states[0, 2:, 1, 3] = 2.0  # the patient still, then at 2 px per frame
    assert torch.allclose(toy_features.mean_speeds(states), torch.tensor([[5.0, 1.0]]))


def test_the_shipped_network_is_small_loads_and_reproduces_its_check():
    path = shipped.CHECKPOINTS / ENTRY["file"]
    assert path.stat().st_size < 1e6 and "python -m nano_videodiff.evaluation.toy_features" in ENTRY["command"]
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == ENTRY["steps"] and all(v.dtype == torch.float16 for v in ckpt["weights"].values())
    net = toy_features.load_features(path)
    measured = toy_features.measure_check(net)
    for key, value in ENTRY["check"].items():
        assert measured[key] == pytest.approx(value, abs=0.03), key
    assert ENTRY["check"]["scenario_accuracy"] > 0.5  # trained: 8 classes, chance 0.125


def test_the_shipped_features_separate_real_from_shuffled_frame_clips():
    net = toy_features.load_features()
    clips = toy_features.physion_clips("test", 256, progress=False)["video"][:128]
    real_a, real_b = clips[:64], clips[64:]
    shuffled_b = toy_features.shuffle_frames(real_b, torch.Generator().manual_seed(1))
    fa, fb, fs = (toy_features.features(net, v) for v in (real_a, real_b, shuffled_b))
    assert distances.frechet_distance(fa, fb) < 0.5 * distances.frechet_distance(fa, fs)
    real_vs_real = toy_features.toy_feature_distance(real_a, real_b, net)
    real_vs_shuffled = toy_features.toy_feature_distance(real_a, shuffled_b, net)
    assert real_vs_real["toy_kid"] < real_vs_shuffled["toy_kid"]
    lo, hi = real_vs_shuffled["toy_fd_ci"]
    assert lo <= real_vs_shuffled["toy_fd"] <= hi and hi < 10 * real_vs_shuffled["toy_fd"]


def test_an_untrained_network_scores_chance_on_the_check():
    """The check is not a constant: fresh weights are near chance on the scenario (0.125)."""
    torch.manual_seed(0)
    assert toy_features.measure_check(toy_features.ToyVideoNet())["scenario_accuracy"] < 0.4


def test_missing_or_foreign_checkpoints_are_refused(tmp_path):
    with pytest.raises(MissingFile, match="does not exist"):
        toy_features.load_features(tmp_path / "none.pt")
    other = tmp_path / "other.pt"
    torch.save({"kind": "something else"}, other)
    with pytest.raises(UserError, match="not a toy feature network"):
        toy_features.load_features(other)
