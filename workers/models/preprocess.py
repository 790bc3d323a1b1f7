# Input preprocessing, numpy in and numpy out, shared by the served models.
#
# Images: encoded bytes (any format PIL reads: JPEG, PNG, ...) given as a 1-D
# uint8 array, or an already decoded HxWx3 uint8 RGB array, become an RGB PIL
# image; it is resized (bilinear, antialiased) so its shorter side is 256,
# the central 224x224 is cut out, and the pixels are scaled to [0, 1] and
# normalised with the ImageNet mean/std, giving float32 [3, 224, 224].
# This is torchvision's usual Resize(256) / CenterCrop(224) evaluation recipe.
#
# Text: UTF-8 sentences go through a Hugging Face tokenizer.json (WordPiece
# for MiniLM) with truncation to 256 tokens and the batch padded to its
# longest sentence, giving int64 ids, attention mask and token-type arrays.
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tokenizers import Tokenizer

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESIZE",
    "CROP",
    "MAX_TOKENS",
    "decode_image",
    "preprocess_image",
    "load_tokenizer",
    "tokenize",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
RESIZE = 256
CROP = 224
MAX_TOKENS = 256


def decode_image(image: np.ndarray[Any, Any]) -> Image.Image:
    """1-D uint8 encoded bytes or HxWx3 uint8 RGB -> RGB PIL image; ValueError if neither."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be a uint8 numpy array (encoded bytes or HxWx3 RGB), got {kind}")
    if image.ndim == 3 and image.shape[2] == 3:
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"image array is empty: shape {image.shape}")
        return Image.fromarray(np.ascontiguousarray(image))
    if image.ndim != 1:
        raise ValueError(f"image must be 1-D encoded bytes or HxWx3 RGB, got shape {image.shape}")
    if image.size == 0:
        raise ValueError("image bytes are empty")
    try:
        with Image.open(io.BytesIO(image.tobytes())) as img:
            img.load()
            return img.convert("RGB")
    except Exception as exc:  # PIL raises many types for bad data
        raise ValueError(f"cannot decode image ({image.size} bytes): {exc}") from exc


def preprocess_image(image: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Encoded or decoded image -> ImageNet-normalised float32 [3, 224, 224]."""
    img = decode_image(image)
    w, h = img.size
    size = (RESIZE, int(RESIZE * h / w)) if w <= h else (int(RESIZE * w / h), RESIZE)
    img = img.resize(size, Image.Resampling.BILINEAR)
    left = round((size[0] - CROP) / 2.0)
    top = round((size[1] - CROP) / 2.0)
    img = img.crop((left, top, left + CROP, top + CROP))
    pixels = np.asarray(img, dtype=np.float32) / 255.0
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).copy()


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Tokenizer from a tokenizer.json, set to truncate at 256 tokens and pad to the batch's longest."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    pad_token = "[PAD]"
    pad_id = tokenizer.token_to_id(pad_token)
    tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=pad_token)
    return tokenizer


def tokenize(tokenizer: Tokenizer, sentences: list[str]) -> dict[str, np.ndarray[Any, Any]]:
    """Sentences -> int64 input_ids, attention_mask, token_type_ids, each [B, longest]."""
    encodings = tokenizer.encode_batch(sentences)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
