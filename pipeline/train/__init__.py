"""Training: streaming shard loader (loader.py), the GAN loop (loop.py),
checkpoints (checkpoint.py), sample grids (samples.py), DDP via torchrun (ddp.py).
The stage entry is flows/train.py."""
