"""Real MobileNetV2 and MiniLM weights, served by a torch worker process, via the SDK."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from central.client import BadRequest, Client, cosine, image_bytes, text
from central.cluster import Cluster

pytestmark = pytest.mark.integration

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
# the worker's label list, read here as text (its loader would import torch into the test)
LABELS = (
    (Path(__file__).resolve().parents[2] / "workers" / "models" / "data" / "imagenet_classes.txt")
    .read_text(encoding="utf-8")
    .splitlines()
)


def _jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def test_mobilenet_classifies_real_photographs(default_cluster: Cluster) -> None:
    with Client(default_cluster.config.frontend_address) as client:
        cat = client.infer("mobilenet_v2", image_bytes(_jpeg(data.chelsea())))
        cup = client.infer("mobilenet_v2", {"image": data.coffee()})  # decoded HxWx3 also works
    # Expected: the same weights run in-process (workers.models.zoo.load_served_model,
    # CPU, this venv) give Chelsea 285 "Egyptian cat" 0.703 then tabby 0.148 and tiger cat
    # 0.142, and the coffee photograph 967 "espresso" 0.992. The bands allow another
    # CPU's float rounding and JPEG decoder, not another class.
    assert [int(i) for i in cat["class_ids"][:3]] == [285, 281, 282], cat
    assert float(cat["scores"][0]) == pytest.approx(0.703, abs=0.03)
    assert int(cup["class_ids"][0]) == 967 and float(cup["scores"][0]) > 0.95, cup
    # scores are a descending top-5 of a softmax; each label names its class id
    for out in (cat, cup):
        scores = [float(x) for x in out["scores"]]
        assert scores == sorted(scores, reverse=True) and sum(scores) <= 1.0 + 1e-5
        assert list(out["labels"]) == [LABELS[int(i)].encode() for i in out["class_ids"]]
    assert cat["labels"][0] == b"Egyptian cat" and cup["labels"][0] == b"espresso"


def test_minilm_ranks_paraphrase_above_unrelated(default_cluster: Cluster) -> None:
    with Client(default_cluster.config.frontend_address) as client:
        a = client.infer("minilm", text("A man is playing a guitar on stage."))["embedding"]
        b = client.infer("minilm", text("Someone performs music with a guitar."))["embedding"]
        c = client.infer("minilm", text("The stock market fell sharply this morning."))["embedding"]
    assert a.shape == (384,)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-4)
    assert cosine(a, b) > cosine(a, c) + 0.3
    # in-process (load_served_model("minilm"), CPU): 0.686 and -0.101; the band allows
    # float rounding, not another model or tokenizer
    assert cosine(a, b) == pytest.approx(0.686, abs=0.03)
    assert cosine(a, c) == pytest.approx(-0.101, abs=0.03)


def test_undecodable_image_is_a_bad_request(default_cluster: Cluster) -> None:
    with Client(default_cluster.config.frontend_address) as client:
        with pytest.raises(BadRequest, match="image"):
            client.infer("mobilenet_v2", image_bytes(b"definitely not a jpeg"))
        # the worker keeps serving
        out = client.infer("mobilenet_v2", image_bytes(_jpeg(data.chelsea())))
        assert int(out["class_ids"][0]) in CAT_CLASSES


def test_cli_infer_image_and_sentence(default_cluster: Cluster, tmp_path: Path) -> None:
    photo = tmp_path / "cat.jpg"
    photo.write_bytes(_jpeg(data.chelsea()))
    addr = default_cluster.config.frontend_address
    run = [sys.executable, "-m", "central.cli", "infer", "--address", addr]
    out = subprocess.run(
        [*run, "mobilenet_v2", "--image", str(photo)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "cat" in out.stdout.splitlines()[0].lower()
    out = subprocess.run(
        [
            *run,
            "minilm",
            "--text",
            "A dog runs in the park.",
            "--compare",
            "A puppy is running on the grass.",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    sim = float(out.stdout.strip().splitlines()[-1].split(":")[1])
    # in-process 0.478 for this pair (unrelated pairs score near 0); float rounding only
    assert sim == pytest.approx(0.478, abs=0.03)
    out = subprocess.run(
        [*run, "mobilenet_v2", "--image", str(tmp_path / "missing.jpg")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "missing.jpg" in out.stderr
