"""MARLIN network components, one per module."""

from .attention import Attention, plain_attention
from .blocks import Block, Mlp
from .decoder import MarlinDecoder
from .embedding import PatchEmbedding3d, SinCosPositionalEmbedding, patchify, sinusoid_table, unpatchify
from .encoder import MarlinEncoder
from .marlin import Marlin

__all__ = [
    "Attention", "Block", "Marlin", "MarlinDecoder", "MarlinEncoder", "Mlp", "PatchEmbedding3d",
    "SinCosPositionalEmbedding", "patchify", "plain_attention", "sinusoid_table", "unpatchify",
]
