"""Style2paints V1 networks: the generator (enhanced residual U-net with guide
decoders), the 4096-d discriminator, and the generator's export format."""
from __future__ import annotations

from pipeline.config import ModelConfig
from pipeline.models.export import CheckpointError, load_generator, save_generator
from pipeline.models.discriminator import Discriminator
from pipeline.models.generator import Generator


def build_generator(model_cfg: ModelConfig) -> Generator:
    return Generator(model_cfg)


def build_discriminator(model_cfg: ModelConfig) -> Discriminator:
    return Discriminator(model_cfg)


__all__ = [
    "build_generator", "build_discriminator", "save_generator", "load_generator",
    "CheckpointError", "Generator", "Discriminator",
]
