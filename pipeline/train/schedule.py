"""The learning-rate schedule: constant, then optionally a linear fall at the end
(`train.lr_decay`, the share of `max_steps` it takes; pix2pix's n_epochs_decay).
A function of (step, max_steps) alone, so a resumed run follows it exactly; a
resume with a raised max_steps stretches what is left of it."""
from __future__ import annotations


def lr_scale(t, step: int) -> float:
    """The factor on lr_g and lr_d for step number `step` (0-based): 1, then down
    to 1/n over the last n = lr_decay * max_steps steps."""
    if not t.lr_decay:
        return 1.0
    decay = max(1, round(t.lr_decay * t.max_steps))
    return max(0.0, min(1.0, (t.max_steps - step) / decay))
