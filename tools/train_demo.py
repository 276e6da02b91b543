"""Train the two demo models that ship in weights/, reproducibly (seeded), on a 2-core CPU in minutes.

1. mobilevit-digits: MobileViTForImageClassification, xx-small widths, on scikit-learn's handwritten digits
   (8x8, upscaled to 64x64 RGB), 80/20 stratified split.
2. deeplabv3-mobilevit-digits: MobileViTForSemanticSegmentation (DeepLabV3, xx-small widths, output stride 8) on
   128x128 scenes: digits pasted at random places and scales onto crops of real photos (tests/data/images);
   11 classes (background and the ten digits). Training scenes use three photos, held-out scenes a fourth.

Both are trained with transformers' own classes, saved as Hub-style checkpoints (tests/data/demo/, what the parity
tests load), converted with tve.convert into weights/*.safetensors, and measured on their held-out data.
Uses torch, transformers and scikit-learn (dev/test dependencies; the engine itself needs none of them):

    python tools/train_demo.py            # both models, about 10 minutes on 2 cores
    python tools/train_demo.py storage    # from the saved checkpoints: the int8 files, and the held-out
                                            # numbers of float32, float16 and int8 storage (the engine alone)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "tests" / "data" / "images"
TRAIN_PHOTOS, HELDOUT_PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg"], ["astronaut.png"]
CHECKPOINTS = ROOT / "tests" / "data" / "demo"
SEED = 0
DIGIT_SIZE, SCENE_SIZE = 64, 128
XX_SMALL = dict(hidden_sizes=[64, 80, 96], neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320], expand_ratio=2.0)


def preprocessor(size: int) -> dict:
    """The processor config both models ship with: the images are already the model's size."""
    return {
        "image_processor_type": "MobileViTImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": size},
        "resample": 2,
        "do_center_crop": True,
        "crop_size": {"height": size, "width": size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_flip_channel_order": True,
    }


# ----------------------------------------------------------------------------------------------------------- data
def digits_split():
    """(train images, train labels, held-out images, held-out labels) of sklearn's digits, 8x8 floats in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    return train_test_split(x, d.target, test_size=0.2, random_state=SEED, stratify=d.target)


def digit_image(digit: np.ndarray, rng: np.random.Generator | None = None) -> Image.Image:
    """An 8x8 digit as a 64x64 RGB image, light ink on black; with `rng`, randomly shifted and scaled (training)."""
    img = Image.fromarray((digit * 255).round().astype(np.uint8)).resize((48, 48), Image.BILINEAR)
    canvas = Image.new("L", (DIGIT_SIZE, DIGIT_SIZE))
    if rng is None:
        canvas.paste(img, (8, 8))
    else:
        s = int(rng.integers(36, 60))
        img = img.resize((s, s), Image.BILINEAR)
        canvas.paste(img, tuple(int(v) for v in rng.integers(0, DIGIT_SIZE - s + 1, 2)))
    return canvas.convert("RGB")


def scene(digits: np.ndarray, labels: np.ndarray, photos: list[np.ndarray], rng: np.random.Generator):
    """A SCENE_SIZE RGB crop of a photo with 1-3 digits pasted on it, and its label map (0 background, d + 1)."""
    photo = photos[rng.integers(len(photos))]
    side = int(rng.integers(SCENE_SIZE, min(photo.shape[:2]) + 1))
    y, x = (int(rng.integers(0, n - side + 1)) for n in photo.shape[:2])
    img = np.asarray(
        Image.fromarray(photo[y : y + side, x : x + side]).resize((SCENE_SIZE, SCENE_SIZE), Image.BILINEAR), np.float32
    )
    target = np.zeros((SCENE_SIZE, SCENE_SIZE), np.int64)
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.integers(len(digits)))
        s = int(rng.integers(36, 72))
        alpha = (
            np.asarray(Image.fromarray((digits[k] * 255).astype(np.uint8)).resize((s, s), Image.BILINEAR), np.float32)[
                ..., None
            ]
            / 255
        )
        y, x = (int(v) for v in rng.integers(0, SCENE_SIZE - s + 1, 2))
        ink = rng.uniform(0, 255, 3).astype(np.float32)
        img[y : y + s, x : x + s] = img[y : y + s, x : x + s] * (1 - alpha) + ink * alpha
        target[y : y + s, x : x + s][alpha[..., 0] > 0.5] = labels[k] + 1
    return Image.fromarray(img.round().astype(np.uint8)), target


def photos(names: list[str]) -> list[np.ndarray]:
    return [np.asarray(Image.open(PHOTOS / n).convert("RGB")) for n in names]


def heldout_scenes(n: int = 200):
    """The held-out segmentation set: held-out digits on a held-out photo, fixed seed."""
    _, x_test, _, y_test = digits_split()
    rng = np.random.default_rng(SEED + 1)
    return [scene(x_test, y_test, photos(HELDOUT_PHOTOS), rng) for _ in range(n)]


def pixel_values(images: list[Image.Image]) -> np.ndarray:
    """What MobileViTImageProcessor gives for images already at the model's size: rescale, then RGB -> BGR."""
    x = np.stack([np.asarray(im, np.float64) for im in images]) * (1 / 255)
    return np.ascontiguousarray(x.astype(np.float32)[..., ::-1].transpose(0, 3, 1, 2))


# -------------------------------------------------------------------------------------------------------- training
def standard_init(model):
    """He-initialised convs and unit BatchNorm: transformers' default init (BatchNorm weights ~ N(0, 0.02)) starts
    MobileViT with vanishing activations, from which it does not train."""
    import torch

    torch.manual_seed(SEED)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)
    return model


def train(model, batches, epochs: int, lr: float, loss_fn=None):
    import torch

    loss_fn = loss_fn or (lambda model, x, y: model(pixel_values=x, labels=y).loss)

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * len(batches(0))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for epoch in range(epochs):
        start, losses = time.time(), []
        for x, y in batches(epoch):
            loss = loss_fn(model, torch.from_numpy(x), torch.from_numpy(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        print(f"  epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f} ({time.time() - start:.0f} s)", flush=True)
    return model.eval()


def train_classifier(epochs: int = 30, batch: int = 64):
    import torch
    import transformers

    x_train, x_test, y_train, y_test = digits_split()
    config = transformers.MobileViTConfig(
        **XX_SMALL,
        image_size=DIGIT_SIZE,
        num_labels=10,
        id2label={i: str(i) for i in range(10)},
        label2id={str(i): i for i in range(10)},
    )
    torch.manual_seed(SEED)
    model = standard_init(transformers.MobileViTForImageClassification(config))

    def batches(epoch):
        rng = np.random.default_rng(SEED + 100 + epoch)
        order = rng.permutation(len(x_train))
        return [
            (pixel_values([digit_image(x_train[i], rng) for i in idx]), y_train[idx])
            for idx in np.array_split(order, len(order) // batch)
        ]

    train(model, batches, epochs, lr=3e-3)
    with torch.no_grad():
        logits = model(torch.from_numpy(pixel_values([digit_image(d) for d in x_test]))).logits.numpy()
    accuracy = float((logits.argmax(1) == y_test).mean())
    print(f"classifier: held-out accuracy {accuracy:.4f} on {len(y_test)} digits")
    return model, {"heldout_accuracy": accuracy, "heldout_samples": len(y_test)}


def train_segmenter(epochs: int = 16, scenes_per_epoch: int = 1024, batch: int = 16):
    """Starts from the digits classifier's backbone (transfer learning: it already tells digits apart), and weighs
    background pixels down in the loss, since digits cover a small part of each scene."""
    import torch
    import transformers

    x_train, _, y_train, _ = digits_split()
    labels = {0: "background", **{d + 1: str(d) for d in range(10)}}
    config = transformers.MobileViTConfig(
        **XX_SMALL,
        image_size=SCENE_SIZE,
        output_stride=8,
        num_labels=11,
        aspp_out_channels=128,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    torch.manual_seed(SEED)
    model = standard_init(transformers.MobileViTForSemanticSegmentation(config))
    classifier = transformers.MobileViTForImageClassification.from_pretrained(CHECKPOINTS / "mobilevit-digits")
    backbone = {k: v for k, v in classifier.mobilevit.state_dict().items() if not k.startswith("conv_1x1_exp")}
    model.mobilevit.load_state_dict(backbone)
    train_photos = photos(TRAIN_PHOTOS)
    weight = torch.tensor([0.25] + [1.0] * 10)

    def loss_fn(model, x, y):
        logits = torch.nn.functional.interpolate(
            model(pixel_values=x).logits, size=y.shape[-2:], mode="bilinear", align_corners=False
        )
        return torch.nn.functional.cross_entropy(logits, y, weight=weight)

    def batches(epoch):
        rng = np.random.default_rng(SEED + 200 + epoch)
        out = []
        for _ in range(scenes_per_epoch // batch):
            pairs = [scene(x_train, y_train, train_photos, rng) for _ in range(batch)]
            out.append((pixel_values([p[0] for p in pairs]), np.stack([p[1] for p in pairs])))
        return out

    train(model, batches, epochs, lr=2e-3, loss_fn=loss_fn)
    miou = mean_iou(model, heldout_scenes())
    print(f"segmenter: held-out mIoU {miou:.4f}")
    return model, {"heldout_miou": miou, "heldout_scenes": len(heldout_scenes())}


def mean_iou(model, scenes, num_labels: int = 11) -> float:
    """Mean over classes of intersection / union, pixels pooled over all scenes, at the scenes' resolution."""
    import torch

    inter, union = np.zeros(num_labels), np.zeros(num_labels)
    for start in range(0, len(scenes), 32):
        part = scenes[start : start + 32]
        with torch.no_grad():
            logits = model(torch.from_numpy(pixel_values([s[0] for s in part]))).logits
            pred = (
                torch.nn.functional.interpolate(
                    logits, size=(SCENE_SIZE, SCENE_SIZE), mode="bilinear", align_corners=False
                )
                .argmax(1)
                .numpy()
            )
        iou_counts(pred, np.stack([s[1] for s in part]), inter, union)
    return float(np.mean(inter[union > 0] / union[union > 0]))


def iou_counts(pred: np.ndarray, target: np.ndarray, inter: np.ndarray, union: np.ndarray) -> None:
    for k in range(len(inter)):
        inter[k] += np.sum((pred == k) & (target == k))
        union[k] += np.sum((pred == k) | (target == k))


# ------------------------------------------------------------------------------------------------------------ main
def save(model, name: str, size: int, metrics: dict) -> None:
    import tinyvit_engine as tve

    ckpt = CHECKPOINTS / name
    model.save_pretrained(ckpt)
    (ckpt / "preprocessor_config.json").write_text(json.dumps(preprocessor(size), indent=2))
    out = tve.convert(ckpt, ROOT / "weights" / f"{name}.safetensors")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    metrics_file = ROOT / "weights" / "metrics.json"
    all_metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    all_metrics[name] = metrics
    metrics_file.write_text(json.dumps(all_metrics, indent=2) + "\n")


def examples() -> None:
    """Example inputs for the README: a few held-out digits and held-out scenes."""
    _, x_test, _, y_test = digits_split()
    for i in range(3):
        digit_image(x_test[i]).save(ROOT / "examples" / f"digit-{y_test[i]}.png")
    for i, (img, _) in enumerate(heldout_scenes(2)):
        img.save(ROOT / "examples" / f"scene-{i}.png")


def engine_accuracy(model) -> float:
    """Held-out accuracy of an engine classifier (same data and preprocessing as train_classifier)."""
    _, x_test, _, y_test = digits_split()
    logits = model(model.processor([digit_image(d) for d in x_test])).logits
    return float((logits.argmax(1) == y_test).mean())


def engine_miou(model, num_labels: int = 11) -> float:
    """Held-out mIoU of an engine segmenter (same scenes and measure as mean_iou)."""
    import tinyvit_engine as tve

    inter, union = np.zeros(num_labels), np.zeros(num_labels)
    scenes = heldout_scenes()
    for start in range(0, len(scenes), 25):
        part = scenes[start : start + 25]
        logits = model(model.processor([s[0] for s in part])).logits
        pred = np.stack(tve.post_process_semantic_segmentation(logits, [(SCENE_SIZE, SCENE_SIZE)] * len(part)))
        iou_counts(pred, np.stack([s[1] for s in part]), inter, union)
    return float(np.mean(inter[union > 0] / union[union > 0]))


def storage() -> None:
    """Write the int8 demo files beside the float32 ones, and measure every storage dtype on the held-out data."""
    import tempfile

    import tinyvit_engine as tve

    all_metrics = json.loads((ROOT / "weights" / "metrics.json").read_text())
    for name, measure, key in (
        ("mobilevit-digits", engine_accuracy, "heldout_accuracy"),
        ("deeplabv3-mobilevit-digits", engine_miou, "heldout_miou"),
    ):
        results = {}
        with tempfile.TemporaryDirectory() as tmp:
            for dtype in ("float32", "float16", "int8"):
                out = Path(tmp) / f"{dtype}.safetensors"
                tve.convert(CHECKPOINTS / name, out, dtype=dtype)
                results[dtype] = {key: measure(tve.load(out)), "size_bytes": out.stat().st_size}
                print(f"{name} {dtype}: {results[dtype]}")
        shipped = tve.convert(CHECKPOINTS / name, ROOT / "weights" / f"{name}.int8.safetensors", dtype="int8")
        print(f"wrote {shipped} ({shipped.stat().st_size / 1e6:.2f} MB)")
        all_metrics[name]["engine_storage"] = results
    (ROOT / "weights" / "metrics.json").write_text(json.dumps(all_metrics, indent=2) + "\n")


def main(which: list[str]) -> None:
    if which == ["storage"]:
        return storage()
    import torch

    torch.set_num_threads(2)
    (ROOT / "examples").mkdir(exist_ok=True)
    examples()
    if not which or "classifier" in which:
        model, metrics = train_classifier()
        save(model, "mobilevit-digits", DIGIT_SIZE, metrics)
    if not which or "segmenter" in which:
        model, metrics = train_segmenter()
        save(model, "deeplabv3-mobilevit-digits", SCENE_SIZE, metrics)


if __name__ == "__main__":
    main(sys.argv[1:])
