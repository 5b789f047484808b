"""Metrics that need no downloaded weights: pixels, object trajectories, object contact.

FVD and LPIPS are defined through networks pretrained on Kinetics / ImageNet whose weights cannot be
fetched offline, so this project measures what it can measure exactly:

1. Pixel metrics in the Moving MNIST 10 -> 10 protocol (PredRNN, PhyDNet, OpenSTL): per-frame MSE as a
   *sum* over the 64x64 pixels with values in [0, 1], averaged over clips; PSNR and SSIM (Wang et al.
   2004) per frame, averaged over frames.
2. Object trajectories recovered from generated frames by colour (the red agent and yellow patient of
   toy Physion) and their pixel error against the simulator's states.
3. Physion-style object contact prediction (Bear et al. 2021, "simulate, then judge"): does the agent
   touch the patient in the generated frames? Scored by accuracy against the simulator's label.

Baselines are scored by the same code: ``copy_last_frame`` (pixels), ``constant_velocity_trajectories``
(objects) and the simulator itself (its states go through ``contact_from_trajectories``):

    xy, vis = object_centroids(generated)                       # (B, T, 2, 2), (B, T, 2)
    err = trajectory_error(xy, states[..., :2], vis)            # model
    cv = constant_velocity_trajectories(object_centroids(context)[0], T_future)
    acc_model = contact_accuracy(contact_from_frames(generated), labels)
    acc_cv = contact_accuracy(contact_from_trajectories(cv, radii_from_frames(context)), labels)
    acc_sim = contact_accuracy(contact_from_trajectories(states[..., :2], true_radii), labels)

Shapes: videos are (B, T, C, H, W) in [-1, 1]; every function also takes one clip (T, C, H, W) and then
returns its result without the batch dimension. Pixel coordinates: x = column, y = row, pixel j covers
[j, j + 1), so a pixel's centre is j + 0.5 (the convention of toy Physion's states).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AGENT_RGB = (0.90, 0.10, 0.10)  # toy Physion's red agent (object 0)
PATIENT_RGB = (0.95, 0.85, 0.10)  # toy Physion's yellow patient (object 1)
BACKGROUND_RGB = (0.08, 0.08, 0.10)


def _batched(*videos: torch.Tensor) -> tuple[list[torch.Tensor], bool]:
    """Add a batch dimension to one-clip (T, C, H, W) inputs; returns (videos, was_single_clip)."""
    if videos[0].dim() not in (4, 5):
        raise ValueError(f"expected a video (B, T, C, H, W) or a clip (T, C, H, W), got {tuple(videos[0].shape)}")
    for v in videos[1:]:
        if v.shape != videos[0].shape:
            raise ValueError(f"shape mismatch: {tuple(videos[0].shape)} vs {tuple(v.shape)}")
    single = videos[0].dim() == 4
    return [v.unsqueeze(0) if single else v for v in videos], single


def _precise(x: torch.Tensor) -> torch.Tensor:
    """float64 where the device has it (metrics are sums of many small numbers), else float32."""
    return x.float() if x.device.type == "mps" else x.double()


# ----------------------------------------------------------------------------------------------------
# Pixel metrics
# ----------------------------------------------------------------------------------------------------


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 2.0,
         per_frame: bool = False) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per frame then averaged over frames (OpenSTL's protocol).

        PSNR_t = 10 log10(data_range^2 / MSE_t),   MSE_t = mean over (C, H, W) of (pred - target)^2

    ``data_range`` is max - min of the value range: 2 for [-1, 1] data (equal to PSNR on [0, 1] data
    with peak 1, since the ratio is scale-invariant). Identical frames give ``inf`` (no cap), and so does
    the frame average that contains one. Returns (B,) or, with ``per_frame``, (B, T).
    """
    (pred, target), single = _batched(pred, target)
    mse = (_precise(pred) - _precise(target)).pow(2).mean(dim=(-3, -2, -1))  # (B, T)
    out = 10.0 * torch.log10(data_range ** 2 / mse)  # mse == 0 -> inf, as the formula says
    out = (out if per_frame else out.mean(-1)).float()
    return out[0] if single else out


def _window_1d(size: int, sigma: float, gaussian: bool, like: torch.Tensor) -> torch.Tensor:
    if gaussian:
        i = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
        w = torch.exp(-i ** 2 / (2 * sigma ** 2))
    else:
        w = torch.ones(size, dtype=like.dtype, device=like.device)
    return w / w.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 2.0, data_min: float = -1.0,
         per_frame: bool = False, window_size: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
         gaussian_weights: bool = True) -> torch.Tensor:
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 2004), mean SSIM per frame.

    For local windows x, y (weighted by an 11x11 Gaussian, sigma 1.5, weights summing to 1):

        SSIM = (2 mu_x mu_y + C1) (2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (sigma_x^2 + sigma_y^2 + C2))
        C1 = (k1 L)^2, C2 = (k2 L)^2, L = data_range, k1 = 0.01, k2 = 0.03

    computed per channel per frame over the windows that fit inside the image ("valid", as in Wang's
    MATLAB code), averaged over positions and channels, then over frames unless ``per_frame``.
    The luminance term is not shift-invariant: it assumes non-negative intensities in [0, L]. So the
    data are first shifted by ``data_min`` (-1 for [-1, 1] videos), which makes the result equal to SSIM
    on the same frames mapped to [0, 1] with L = 1, the Moving MNIST convention.

    ``gaussian_weights=False`` with ``window_size=7`` gives skimage's default instead (uniform window,
    sample covariance), which OpenSTL's Moving MNIST table used. Returns (B,) or (B, T).
    """
    (pred, target), single = _batched(pred, target)
    b, t, c, h, w = pred.shape
    if h < window_size or w < window_size:
        raise ValueError(f"frames {h}x{w} are smaller than the {window_size}x{window_size} SSIM window")
    x = (_precise(pred) - data_min).reshape(b * t * c, 1, h, w)
    y = (_precise(target) - data_min).reshape(b * t * c, 1, h, w)
    win = _window_1d(window_size, sigma, gaussian_weights, x)
    # Five local weighted means in one pass: E[x], E[y], E[x^2], E[y^2], E[xy]; the window is separable,
    # so a row filter then a column filter (no padding: only windows inside the image count).
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1).reshape(-1, 1, h, w)
    stats = F.conv2d(F.conv2d(stats, win.view(1, 1, 1, -1)), win.view(1, 1, -1, 1))
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.reshape(b * t * c, 5, *stats.shape[-2:]).unbind(1)
    var_x, var_y, cov = e_xx - mu_x ** 2, e_yy - mu_y ** 2, e_xy - mu_x * mu_y
    if not gaussian_weights:  # skimage's use_sample_covariance: unbiased N / (N - 1) correction
        n = window_size ** 2
        var_x, var_y, cov = var_x * n / (n - 1), var_y * n / (n - 1), cov * n / (n - 1)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    out = ssim_map.mean(dim=(-2, -1)).reshape(b, t, c).mean(-1)  # (B, T)
    out = (out if per_frame else out.mean(-1)).float()
    return out[0] if single else out


def mmnist_mse_per_frame(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Moving MNIST "MSE per frame": sum over pixels of the squared error with values in [0, 1], mean over clips.

        MSE_t = mean_b sum_{c,h,w} ((pred - target) / 2)^2        ([-1, 1] -> [0, 1] halves differences)

    Shape (T,). The protocol's headline number is its mean over the 10 predicted frames (OpenSTL
    ``np.mean((pred - true)**2, axis=(0, 1)).sum()``): an MSE of 24 is about 0.006 per 64x64 pixel.
    """
    (pred, target), _ = _batched(pred, target)
    se = ((_precise(pred) - _precise(target)) / 2).pow(2)
    return se.sum(dim=(-3, -2, -1)).mean(0).float()


def mmnist_mae_per_frame(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Moving MNIST "MAE per frame": as :func:`mmnist_mse_per_frame` with the absolute error. Shape (T,)."""
    (pred, target), _ = _batched(pred, target)
    ae = ((_precise(pred) - _precise(target)) / 2).abs()
    return ae.sum(dim=(-3, -2, -1)).mean(0).float()


def copy_last_frame(context: torch.Tensor, num_future: int) -> torch.Tensor:
    """Baseline prediction: repeat the last context frame. (B, Tc, C, H, W) -> (B, num_future, C, H, W)."""
    (context,), single = _batched(context)
    out = context[:, -1:].expand(-1, num_future, -1, -1, -1).clone()
    return out[0] if single else out


# ----------------------------------------------------------------------------------------------------
# Objects by colour
# ----------------------------------------------------------------------------------------------------


def object_masks(video: torch.Tensor, colors=(AGENT_RGB, PATIENT_RGB), background=BACKGROUND_RGB,
                 tol: float = 0.15, angle_tol: float = 0.2, min_alpha: float = 0.25) -> torch.Tensor:
    """Soft membership (B, T, K, H, W) in [0, 1] of each pixel in each of K flat-coloured objects.

    An anti-aliased edge pixel is a blend p = bg + a (c - bg) of the object colour c and the background,
    with a the pixel's coverage. So each pixel is projected on the segment bg -> c:

        a = <p - bg, c - bg> / |c - bg|^2,     r = |p - bg - clip(a, 0, 1) (c - bg)|

    The membership is a (clipped to 1) where the pixel lies near the segment, and 0 elsewhere:

    - ``r <= tol`` (absolute): full weight, fading linearly to 0 at 2 tol; rejects other colours.
    - ``r / |p - bg| <= angle_tol`` (the sine of the angle between p - bg and c - bg), fading to 0 at
      twice that: a faint edge of *another* object (say 25% yellow) is close to the background, hence
      within ``tol`` of the red segment too, but it points in yellow's direction. Without this test the
      patient's rim leaks into the agent and pulls its centroid by ~0.2 px.
    - ``a >= min_alpha``: noise on the background would otherwise pull every centroid to the centre.

    Colours are RGB in [0, 1]; the video is RGB in [-1, 1].
    """
    (video,), single = _batched(video)
    if video.shape[2] != 3:
        raise ValueError(f"object colours need RGB frames, got {video.shape[2]} channels")
    rgb = (video.float() + 1) / 2
    col = torch.as_tensor(colors, dtype=rgb.dtype, device=rgb.device)  # (K, 3)
    bg = torch.as_tensor(background, dtype=rgb.dtype, device=rgb.device).view(1, 1, 1, 3, 1, 1)
    u = (col.view(1, 1, -1, 3, 1, 1) - bg)  # (1, 1, K, 3, 1, 1)
    d = rgb.unsqueeze(2) - bg  # (B, T, 1, 3, H, W)
    a = (d * u).sum(3) / u.pow(2).sum(3)  # (B, T, K, H, W)
    r = (d - a.clamp(0, 1).unsqueeze(3) * u).norm(dim=3)
    sin = r / d.norm(dim=3).clamp(min=1e-6)
    gate = ((2 * tol - r) / tol).clamp(0, 1) * ((2 * angle_tol - sin) / angle_tol).clamp(0, 1)
    cover = torch.where(a >= min_alpha, a.clamp(max=1.0), torch.zeros_like(a))
    out = cover * gate
    return out[0] if single else out


def object_centroids(video: torch.Tensor, colors=(AGENT_RGB, PATIENT_RGB), background=BACKGROUND_RGB,
                     tol: float = 0.15, angle_tol: float = 0.2, min_alpha: float = 0.25,
                     min_area: float = 2.0):
    """Centroids of coloured objects in each frame: returns ``(xy, visible)``.

        x = sum_ij m_ij (j + 0.5) / sum_ij m_ij,   y = sum_ij m_ij (i + 0.5) / sum_ij m_ij

    with m the soft membership of :func:`object_masks` (i = row, j = column). ``xy`` is (B, T, K, 2)
    float32 in pixel units, NaN where the object is absent; ``visible`` (B, T, K) bool is True where its
    area sum m >= ``min_area`` pixels (a generated frame may lose an object).
    """
    m = object_masks(video, colors, background, tol, angle_tol, min_alpha)  # (..., H, W)
    h, w = m.shape[-2:]
    area = m.sum(dim=(-2, -1))
    xs = torch.arange(w, dtype=m.dtype, device=m.device) + 0.5
    ys = torch.arange(h, dtype=m.dtype, device=m.device) + 0.5
    cx = (m.sum(-2) * xs).sum(-1) / area.clamp(min=1e-12)
    cy = (m.sum(-1) * ys).sum(-1) / area.clamp(min=1e-12)
    visible = area >= min_area
    xy = torch.stack([cx, cy], -1).masked_fill(~visible.unsqueeze(-1), float("nan"))
    return xy, visible


def radii_from_frames(video: torch.Tensor, colors=(AGENT_RGB, PATIENT_RGB), background=BACKGROUND_RGB,
                      tol: float = 0.15, angle_tol: float = 0.2, min_alpha: float = 0.25,
                      min_area: float = 2.0) -> torch.Tensor:
    """Equivalent-disc radius sqrt(area / pi) of each object, median over the frames where visible. (B, K).

    Treats every object as a disc, which is what a centroid-distance contact test can use; NaN when the
    object never appears.
    """
    m = object_masks(video, colors, background, tol, angle_tol, min_alpha)
    area = m.sum(dim=(-2, -1))  # (..., T, K)
    r = torch.sqrt(area / math.pi).masked_fill(area < min_area, float("nan"))
    return r.nanmedian(dim=-2).values


def trajectory_error(pred_xy: torch.Tensor, true_xy: torch.Tensor, visible: torch.Tensor | None = None,
                     per_frame: bool = False) -> torch.Tensor:
    """Mean Euclidean position error in pixels, ignoring entries that are invisible or NaN.

        err = mean over (b, t, k) with visible of |pred_xy - true_xy|_2

    Shapes (..., T, K, 2) and ``visible`` (..., T, K). Returns a scalar, or (T,) with ``per_frame``
    (the error against the prediction horizon); NaN where nothing counts. Report the visible fraction
    next to it: a model that drops objects is not penalised here.
    """
    err = (pred_xy.float() - true_xy.float()).norm(dim=-1)  # (..., T, K)
    ok = torch.isfinite(err)
    if visible is not None:
        ok = ok & visible.bool()
    err = torch.where(ok, err, torch.zeros_like(err))
    if per_frame:
        t = err.shape[-2]
        err, ok = err.movedim(-2, 0).reshape(t, -1), ok.movedim(-2, 0).reshape(t, -1)
        return err.sum(1) / ok.sum(1)  # 0 / 0 -> NaN where no frame entry is visible
    return err.sum() / ok.sum()


def constant_velocity_trajectories(context_xy: torch.Tensor, num_future: int,
                                   visible: torch.Tensor | None = None) -> torch.Tensor:
    """Baseline: extrapolate each object at the velocity of its last two visible context positions.

        v = (p[t1] - p[t0]) / (t1 - t0),   p[Tc - 1 + s] = p[t1] + (Tc - 1 + s - t1) v,   s = 1..num_future

    with t1 > t0 the last two context frames where the object is visible (``visible``, or finite
    coordinates). An object seen once stays put; one never seen gives NaN. (..., Tc, K, 2) ->
    (..., num_future, K, 2).
    """
    xy = context_xy.float()
    vis = torch.isfinite(xy).all(-1) if visible is None else visible.bool() & torch.isfinite(xy).all(-1)
    tc = xy.shape[-3]
    t = torch.arange(tc, device=xy.device).view(tc, 1)  # broadcasts against (..., Tc, K)
    last = torch.where(vis, t, -1).amax(dim=-2)  # (..., K)
    prev = torch.where(vis & (t < last.unsqueeze(-2)), t, -1).amax(dim=-2)

    def at(idx):  # positions at per-object frame indices idx (..., K) -> (..., K, 2)
        index = idx.clamp(min=0)[..., None, :, None].expand(*idx.shape[:-1], 1, idx.shape[-1], 2)
        return torch.take_along_dim(xy, index, dim=-3).squeeze(-3)

    p_last, p_prev = at(last), at(prev)
    dt = (last - prev).clamp(min=1).unsqueeze(-1).float()
    v = torch.where((prev >= 0).unsqueeze(-1), (p_last - p_prev) / dt, torch.zeros_like(p_last))
    future_t = tc - 1 + torch.arange(1, num_future + 1, device=xy.device).view(num_future, 1)  # (F, 1)
    steps = (future_t - last.unsqueeze(-2)).float().unsqueeze(-1)  # (..., F, K, 1)
    out = p_last.unsqueeze(-3) + steps * v.unsqueeze(-3)
    return out.masked_fill((last < 0)[..., None, :, None], float("nan"))


# ----------------------------------------------------------------------------------------------------
# Object contact (Physion's Object Contact Prediction, judged from our own outputs)
# ----------------------------------------------------------------------------------------------------


def contact_from_frames(video: torch.Tensor, colors=(AGENT_RGB, PATIENT_RGB), background=BACKGROUND_RGB,
                        tol: float = 0.15, angle_tol: float = 0.2, min_alpha: float = 0.25,
                        threshold: float = 0.5, margin: int = 2, per_frame: bool = False) -> torch.Tensor:
    """Does the agent (colour 0) touch the patient (colour 1) in some frame? bool (B,), or (B, T).

    Each object's mask is its membership >= ``threshold`` (pixels at least half covered). A frame shows
    contact when the agent mask dilated by ``margin`` pixels (a (2 margin + 1)^2 max filter) overlaps the
    patient mask. Why margin = 2: where two objects touch inside a pixel, that pixel is a red/yellow
    blend that belongs to neither mask, leaving a 1-pixel seam; so masks at most 1 pixel apart count as
    touching. Measured on anti-aliased discs: gaps up to 1 px read as contact, gaps of 1.5 px and more
    do not (the resolution limit of a 64x64 frame). Physion's label is "contact at
    any time" (physopt: ``np.any(labels)``), hence the ``any`` over frames.
    """
    m = object_masks(video, colors, background, tol, angle_tol, min_alpha)
    agent, patient = m[..., 0, :, :] >= threshold, m[..., 1, :, :] >= threshold  # (..., T, H, W)
    lead = agent.shape[:-2]
    grown = F.max_pool2d(agent.float().reshape(-1, 1, *agent.shape[-2:]), 2 * margin + 1, stride=1,
                         padding=margin).reshape(*lead, *agent.shape[-2:]) > 0
    touch = (grown & patient).flatten(-2).any(-1)  # (..., T)
    return touch if per_frame else touch.any(-1)


def contact_from_trajectories(xy: torch.Tensor, radii: torch.Tensor, margin: float = 1.0,
                              per_frame: bool = False) -> torch.Tensor:
    """Contact judged from positions and disc radii: |xy_agent - xy_patient| <= r_agent + r_patient + margin.

    ``xy`` (..., T, K, 2) with object 0 = agent, 1 = patient (recovered centroids, an extrapolation, or
    the simulator's states[..., :2]); ``radii`` (..., K) or (K,). NaN positions never touch. The default
    margin of 1 px matches the pixel tolerance of :func:`contact_from_frames`. Returns bool (...,) ("any
    frame"), or (..., T).
    """
    radii = torch.as_tensor(radii, dtype=torch.float32, device=xy.device)
    dist = (xy[..., 0, :].float() - xy[..., 1, :].float()).norm(dim=-1)  # (..., T)
    reach = (radii[..., 0] + radii[..., 1] + margin).unsqueeze(-1)
    touch = dist <= reach  # NaN compares False
    return touch if per_frame else touch.any(-1)


def contact_accuracy(pred_labels: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of clips whose predicted contact equals the label (Physion OCP accuracy; chance = 0.5 on
    a balanced set)."""
    pred_labels, labels = torch.as_tensor(pred_labels).bool(), torch.as_tensor(labels).bool()
    if pred_labels.shape != labels.shape:
        raise ValueError(f"shape mismatch: {tuple(pred_labels.shape)} vs {tuple(labels.shape)}")
    return (pred_labels == labels).float().mean().item()
