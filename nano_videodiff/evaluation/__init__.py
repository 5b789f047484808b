"""Evaluation: how generated videos are scored and written.

- ``metrics``       PSNR, SSIM, object trajectories and contact read from frames.
- ``physics_eval``  forward prediction on held-out toy Physion clips against copy-last, constant velocity
                    and the simulator.
- ``video_io``      GIF/MP4/PNG writing and reading.
- ``distances``     Frechet distance (careful matrix square root) and KID between feature sets.
- ``i3d``, ``fvd``  the I3D network (weights from a local file) and FVD's protocol.
- ``toy_features``  the offline learned-feature distance: a toy video network trained on toy Physion.
- ``stats``         bootstrap confidence intervals over clips.
- ``readout``       Physion's logistic-regression readout of contact; ``scenarios``: per-scenario tables;
                    ``report``: what ``sample.py --eval`` prints beyond the physics table.
"""
