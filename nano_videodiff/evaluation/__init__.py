"""Evaluation: how generated videos are scored and written.

- ``metrics``       PSNR, SSIM, object trajectories and contact read from frames.
- ``physics_eval``  forward prediction on held-out toy Physion clips against copy-last, constant velocity
                    and the simulator.
- ``video_io``      GIF/MP4/PNG writing and reading.
"""
