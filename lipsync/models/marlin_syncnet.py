"""16-frame MARLIN-based lip-sync expert (the paper retrained SyncNet on 16-frame windows).

Video branch: a MARLIN ViT (initialised from MARLIN weights with :meth:`MarlinSyncNet.load_marlin`,
then fine-tuned) on the lower halves of 16 consecutive faces, stretched to the encoder's square
input.  Its tokens are averaged over space per tube (keeping the order in time, which sync
depends on), concatenated over the ``T'`` tubes and projected to ``embed_dim``.

Audio branch: Wav2Lip's convolutional audio encoder adapted to the 64 mel columns that cover
the 16 frames at 25 fps (frame ``i``'s 16-column window starts at column ``int(3.2 i)``; the
last one, frame 15, ends at column 64): ``(B, 1, 80, 64) -> (B, 512, 1, 1)``, projected to
``embed_dim``.

Both embeddings pass a ReLU and are L2-normalised, so their cosine similarity lies in [0, 1]
and trains with the same BCE as Wav2Lip's expert (:func:`lipsync.models.syncnet.sync_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from einops import reduce
from torch import Tensor, nn

from marlin.config import get_config

from .blocks import audio_encoder
from .config import ModelConfig
from .marlin_encoder import build_encoder, load_marlin_weights, resize_clip

__all__ = ["MarlinSyncNet", "MarlinSyncConfig", "MEL_COLUMNS"]

#: Mel columns per 16-frame window: 15 frame steps of 3.2 columns (25 fps) + one 16-column window.
MEL_COLUMNS = 64


@dataclass(frozen=True)
class MarlinSyncConfig(ModelConfig):
    """Sizes of the MARLIN-based sync expert."""

    marlin: str = "vit_base"  # MARLIN registry size of the video encoder
    encoder_init: str = "marlin"  # "marlin": start from MARLIN weights; "random": from scratch
    face_size: tuple[int, int] = (48, 96)  # (H, W) of the lower-half frames it takes
    embed_dim: int = 512  # width of both embeddings
    audio_width: float = 1.0  # width multiplier of the audio encoder

    def __post_init__(self) -> None:
        super().__post_init__()
        get_config(self.marlin)
        if self.encoder_init not in ("marlin", "random"):
            raise ValueError(f"encoder_init {self.encoder_init!r}: choose 'marlin' or 'random'")


class MarlinSyncNet(nn.Module):
    """Sync expert on 16 lower-half frames and their 64 mel columns.

    Attributes
    ----------
    n_frames : int
        16 (the MARLIN window).
    mel_columns : int
        64.
    """

    mel_columns = MEL_COLUMNS

    def __init__(self, config: MarlinSyncConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or MarlinSyncConfig()
        self.marlin_config = get_config(cfg.marlin)
        self.n_frames = self.marlin_config.n_frames
        self.encoder = build_encoder(cfg.marlin)
        t, _, _ = self.marlin_config.grid
        self.video_proj = nn.Linear(t * self.marlin_config.encoder_dim, cfg.embed_dim)
        # 80 x 64 -> 80x64, 27x32, 9x11, 3x6 -> (3, 6) valid conv -> 1x1
        self.audio_encoder = audio_encoder((2, 2, 2, 2), cfg.audio_width, strides=(1, (3, 2), 3, (3, 2)),
                                           final_kernel=(3, 6))
        self.audio_proj = nn.Linear(self.audio_encoder[-1].conv_block[0].out_channels, cfg.embed_dim)

    @property
    def weights_colour(self) -> str:
        """Always ``"rgb"`` (MARLIN's order)."""
        return self.config.colour

    def load_marlin(self, source: object) -> None:
        """Initialise the video encoder from MARLIN weights (a ``Marlin``, a state dict or a path)."""
        load_marlin_weights(self.encoder, source)

    def embed_video(self, lower_faces: Tensor) -> Tensor:
        """``(B, 3, 16, h, w)`` RGB in [0, 1], ``(h, w) = config.face_size`` -> ``(B, embed_dim)``."""
        shape = (3, self.n_frames, *self.config.face_size)
        if lower_faces.ndim != 5 or tuple(lower_faces.shape[1:]) != shape:
            raise ValueError(f"lower_faces must be (B, {', '.join(map(str, shape))}), "
                             f"got {tuple(lower_faces.shape)}")
        clip = resize_clip(lower_faces, self.marlin_config.img_size)
        tokens = self.encoder.extract_features(clip, keep_seq=True)  # (B, N, E)
        t, h, w = self.marlin_config.grid
        per_time = reduce(tokens, "b (t h w) e -> b (t e)", "mean", t=t, h=h, w=w)
        return F.normalize(F.relu(self.video_proj(per_time)), dim=1)

    def embed_audio(self, mels: Tensor) -> Tensor:
        """``(B, 1, 80, 64)`` mel columns in [-4, 4] -> ``(B, embed_dim)``."""
        if mels.ndim != 4 or tuple(mels.shape[1:]) != (1, 80, self.mel_columns):
            raise ValueError(f"mels must be (B, 1, 80, {self.mel_columns}), got {tuple(mels.shape)}")
        return F.normalize(F.relu(self.audio_proj(self.audio_encoder(mels).flatten(1))), dim=1)

    def forward(self, mels: Tensor, lower_faces: Tensor) -> tuple[Tensor, Tensor]:
        """``(audio_embedding, video_embedding)``, each ``(B, embed_dim)``, L2-normalised, >= 0.

        Parameters
        ----------
        mels:
            ``(B, 1, 80, 64)`` float in [-4, 4]: the columns from frame 0's window start.
        lower_faces:
            ``(B, 3, 16, h, w)`` float RGB in [0, 1]: rows ``H//2:`` of 16 consecutive faces.
        """
        return self.embed_audio(mels), self.embed_video(lower_faces)

    def similarity(self, mels: Tensor, lower_faces: Tensor) -> Tensor:
        """``(B,)`` cosine similarity in [0, 1], read as the probability of being in sync."""
        audio, video = self(mels, lower_faces)
        return (audio * video).sum(dim=1)
