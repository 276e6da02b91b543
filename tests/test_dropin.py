"""The drop-in API (issue 13): transformers' documented MobileViT usage, run as written with transformers and again
with only the import line and return_tensors changed, in a process where torch cannot be imported; the pipelines;
Hub ids from a local huggingface_hub cache, offline; attention maps; and the errors that name what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from hf import save_checkpoint, v1_model, v2_model
from PIL import Image

import tinyvit_engine as tve

PHOTOS = sorted(str(p) for p in (Path(__file__).parent / "data" / "images").glob("*.*") if p.suffix != ".md")
REPOS = {  # Hub id -> (family, task): random-weight stand-ins for Apple's checkpoints, in a local Hub cache
    "apple/mobilevit-small": ("v1", "classification"),
    "apple/deeplabv3-mobilevit-small": ("v1", "segmentation"),
    "apple/mobilevitv2-1.0-imagenet1k-256": ("v2", "classification"),
    "apple/mobilevitv2-1.0-voc-deeplabv3": ("v2", "segmentation"),
}
LABELS = ["cat", "dog", "rocket", "cup", "person", "tree", "car"]


def torch_model(family, task, seed=5):
    kw = dict(
        num_labels=len(LABELS),
        task=task,
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
    )
    if task == "segmentation":
        kw["output_stride"] = 16
    return v1_model("xx-small", seed=seed, **kw) if family == "v1" else v2_model(0.5, seed=seed, **kw)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A huggingface_hub cache holding the four repos, and the environment that keeps everyone offline in it."""
    root = tmp_path_factory.mktemp("hub")
    for i, (repo, (family, task)) in enumerate(REPOS.items()):
        snapshot = root / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123abcd"
        save_checkpoint(torch_model(family, task, seed=i), snapshot)
        (snapshot.parent.parent / "refs").mkdir()
        (snapshot.parent.parent / "refs" / "main").write_text("0123abcd")
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_CACHE": str(root)}
    return root, env


@pytest.fixture()
def offline(hub, monkeypatch):
    for k, v in hub[1].items():
        monkeypatch.setenv(k, v)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(hub[0]))
    return hub[0]


# transformers' documented usage (its MobileViT pages), with a local photo for the downloaded one; the lines after
# "# --" save what the test compares and are not part of the usage
CLASSIFICATION = """
from transformers import AutoImageProcessor, MobileViTForImageClassification
from PIL import Image

image = Image.open(PHOTO)
image_processor = AutoImageProcessor.from_pretrained("apple/mobilevit-small")
model = MobileViTForImageClassification.from_pretrained("apple/mobilevit-small")
inputs = image_processor(images=image, return_tensors="pt")
outputs = model(**inputs)
logits = outputs.logits
predicted_class_idx = logits.argmax(-1).item()
print("Predicted class:", model.config.id2label[predicted_class_idx])
# --
save(logits=logits, label=model.config.id2label[predicted_class_idx])
"""

SEGMENTATION = """
from transformers import AutoImageProcessor, MobileViTForSemanticSegmentation
from PIL import Image

image = Image.open(PHOTO)
image_processor = AutoImageProcessor.from_pretrained("apple/deeplabv3-mobilevit-small")
model = MobileViTForSemanticSegmentation.from_pretrained("apple/deeplabv3-mobilevit-small")
inputs = image_processor(images=image, return_tensors="pt")
outputs = model(**inputs)
logits = outputs.logits
predicted_mask = logits.argmax(1).squeeze(0)
maps = image_processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])
# --
save(logits=logits, mask=predicted_mask, map=maps[0])
"""

PREAMBLE = """
import sys, numpy as np
PHOTO, OUT, NO_TORCH = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if NO_TORCH:
    for name in ("torch", "tensorflow", "jax"):
        sys.modules[name] = None  # import torch raises ImportError from here on
    try:
        import torch
        raise SystemExit("torch is importable")
    except ImportError:
        pass
saved = {}
def save(**values):
    for k, v in values.items():
        saved[k] = v if isinstance(v, str) else np.asarray(v.detach().numpy() if hasattr(v, "detach") else v)
    np.savez(OUT, **{k: np.asarray(v) for k, v in saved.items()})
"""


def as_engine_code(usage: str) -> str:
    """The one-import switch: the transformers import line and return_tensors, nothing else."""
    code = usage.replace("from transformers import", "from tinyvit_engine import")
    return code.replace('return_tensors="pt"', 'return_tensors="np"')


def run_usage(usage, photo, out, env, no_torch):
    script = PREAMBLE + usage
    result = subprocess.run(
        [sys.executable, "-c", script, photo, str(out), "1" if no_torch else "0"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(np.load(out)), result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("family", ["v1", "v2"])
@pytest.mark.parametrize("usage", ["classification", "segmentation"])
def test_documented_usage_with_one_import_changed(hub, tmp_path, family, usage):
    code = CLASSIFICATION if usage == "classification" else SEGMENTATION
    if family == "v2":
        code = code.replace("MobileViTFor", "MobileViTV2For")
        code = code.replace('"apple/mobilevit-small"', '"apple/mobilevitv2-1.0-imagenet1k-256"')
        code = code.replace('"apple/deeplabv3-mobilevit-small"', '"apple/mobilevitv2-1.0-voc-deeplabv3"')
    engine_code = as_engine_code(code)
    assert engine_code.count("\n") == code.count("\n") and engine_code != code
    for photo in PHOTOS[:2]:
        want, want_out = run_usage(code, photo, tmp_path / "hf.npz", hub[1], no_torch=False)
        got, got_out = run_usage(engine_code, photo, tmp_path / "engine.npz", hub[1], no_torch=True)
        assert got_out == want_out  # the printed label
        scale = float(np.abs(want["logits"]).max())
        np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-4, atol=1e-4 * scale)
        if usage == "classification":
            assert got["label"] == want["label"]
        else:
            assert (got["mask"] == want["mask"]).mean() >= 0.999
            assert got["map"].shape == want["map"].shape == Image.open(photo).size[::-1]
            assert (got["map"] == want["map"]).mean() >= 0.999


@pytest.mark.parametrize("repo", ["apple/mobilevit-small", "apple/mobilevitv2-1.0-imagenet1k-256"])
def test_classification_pipeline(offline, repo):
    want = transformers.pipeline("image-classification", model=repo, device="cpu")(PHOTOS, top_k=3)
    got = tve.pipeline("image-classification", model=repo)(PHOTOS, top_k=3)
    assert len(got) == len(PHOTOS) and all(len(g) == 3 for g in got)
    for g, w in zip(got, want, strict=True):
        assert [x["label"] for x in g] == [x["label"] for x in w]
        np.testing.assert_allclose([x["score"] for x in g], [x["score"] for x in w], rtol=1e-4, atol=1e-6)
    one = tve.pipeline("image-classification", model=repo)(PHOTOS[0])  # one image: one list, top 5 by default
    assert [x["label"] for x in one][:3] == [x["label"] for x in want[0]]


@pytest.mark.parametrize("repo", ["apple/deeplabv3-mobilevit-small", "apple/mobilevitv2-1.0-voc-deeplabv3"])
def test_segmentation_pipeline(offline, repo):
    want = transformers.pipeline("image-segmentation", model=repo, device="cpu")(PHOTOS[0])
    got = tve.pipeline("image-segmentation", model=repo)(PHOTOS[0])
    size = Image.open(PHOTOS[0]).size
    assert all(s["score"] is None and isinstance(s["mask"], Image.Image) and s["mask"].size == size for s in got)
    w_masks = {s["label"]: np.asarray(s["mask"]) for s in want}
    g_masks = {s["label"]: np.asarray(s["mask"]) for s in got}
    assert {k for k, m in w_masks.items() if (m > 0).sum() > 20} <= set(g_masks)
    for label in set(w_masks) | set(g_masks):
        zero = np.zeros(size[::-1], np.uint8)
        assert (g_masks.get(label, zero) == w_masks.get(label, zero)).mean() >= 0.999, label
    many = tve.pipeline("image-segmentation", model=repo)(PHOTOS[:2])  # a list of images: a list of lists
    assert len(many) == 2 and all(isinstance(m, list) for m in many)


def test_outputs_read_like_transformers(offline):
    model = tve.MobileViTForImageClassification.from_pretrained("apple/mobilevit-small")
    x = tve.AutoImageProcessor.from_pretrained("apple/mobilevit-small")(PHOTOS[0], return_tensors="np")
    assert set(x) == {"pixel_values"} and x.pixel_values is x["pixel_values"]
    out = model(**x, output_hidden_states=True)
    assert list(out) == ["logits", "hidden_states"] and out["logits"] is out.logits and out[0] is out.logits
    assert len(out.hidden_states) == 5 and out.to_tuple()[1] is out.hidden_states
    plain = model(x.pixel_values, return_dict=False)
    assert isinstance(plain, tuple) and len(plain) == 1
    np.testing.assert_array_equal(plain[0], out.logits)
    base = tve.MobileViTModel.from_pretrained("apple/mobilevit-small")(**x)
    assert list(base) == ["last_hidden_state", "pooler_output"]
    auto = tve.AutoModelForSemanticSegmentation.from_pretrained("apple/mobilevitv2-1.0-voc-deeplabv3")
    assert type(auto).__name__ == "AutoModelForSemanticSegmentation" and list(auto(**x)) == ["logits"]
    assert tve.MobileViTFeatureExtractor is tve.MobileViTImageProcessor


def test_sources_other_than_hub_ids(offline, tmp_path):
    snapshot = next(offline.glob("models--apple--mobilevit-small/snapshots/*"))
    engine_file = tve.convert(snapshot, tmp_path / "m.safetensors")
    x = tve.AutoImageProcessor.from_pretrained(engine_file)(PHOTOS[0], return_tensors="np")
    by_dir = tve.AutoModelForImageClassification.from_pretrained(snapshot)(**x).logits
    by_file = tve.AutoModelForImageClassification.from_pretrained(engine_file)(**x).logits
    np.testing.assert_array_equal(by_dir, by_file)


def test_wrong_class_names_the_mismatch(offline):
    cases = [
        (tve.MobileViTV2ForImageClassification, "apple/mobilevit-small", r"model_type mobilevit\).*runs mobilevitv2"),
        (tve.MobileViTForSemanticSegmentation, "apple/mobilevit-small", "ForImageClassification.*semantic-seg"),
        (tve.AutoModelForImageClassification, "apple/deeplabv3-mobilevit-small", "semantic-segmentation\\).*image-cl"),
        (tve.MobileViTModel, "apple/deeplabv3-mobilevit-small", "DeepLabV3 checkpoint"),
    ]
    for cls, repo, words in cases:
        with pytest.raises(tve.UnsupportedConfigError, match=words) as e:
            cls.from_pretrained(repo)
        assert "\n" not in str(e.value)
    with pytest.raises(tve.UnsupportedConfigError, match="needs a semantic-segmentation checkpoint"):
        tve.pipeline("image-segmentation", model="apple/mobilevit-small")
    with pytest.raises(tve.UnsupportedConfigError, match="'depth-estimation'"):
        tve.pipeline("depth-estimation", model="apple/mobilevit-small")


def test_nothing_is_ignored_silently(offline):
    model = tve.MobileViTForImageClassification.from_pretrained("apple/mobilevit-small")
    processor = tve.AutoImageProcessor.from_pretrained("apple/mobilevit-small")
    x = processor(PHOTOS[0], return_tensors="np")
    with pytest.raises(TypeError, match="output_attention'"):
        model(**x, output_attention=True)  # a typo
    with pytest.raises(TypeError, match="labels.*inference only"):
        model(**x, labels=np.array([1]))
    for framework in ("pt", "tf"):
        with pytest.raises(tve.InputError, match="return_tensors='np'"):
            processor(PHOTOS[0], return_tensors=framework)
    with pytest.raises(TypeError, match="do_normalize"):
        processor(PHOTOS[0], do_normalize=True)
    with pytest.raises(tve.UnsupportedConfigError, match="torch_dtype='float16'.*computes in float32"):
        tve.MobileViTForImageClassification.from_pretrained("apple/mobilevit-small", torch_dtype="float16")
    with pytest.raises(TypeError, match="torch_dtypes"):
        tve.MobileViTForImageClassification.from_pretrained("apple/mobilevit-small", torch_dtypes="float32")
    with pytest.raises(TypeError, match="threshold"):
        tve.pipeline("image-classification", model="apple/mobilevit-small")(PHOTOS[0], threshold=0.5)
    with pytest.raises(tve.HubError, match="apple/not-in-the-cache"):
        tve.MobileViTForImageClassification.from_pretrained("apple/not-in-the-cache")
    # a setting passed at call time overrides the checkpoint's, as in transformers
    small = processor(PHOTOS[0], return_tensors="np", crop_size={"height": 128, "width": 96})
    assert small.pixel_values.shape == (1, 3, 128, 96)
    assert processor(PHOTOS[0]).shape == (1, 3, 256, 256)  # without return_tensors: the engine's own array


def hooked_attention(model, x):
    """Each transformer layer's attention probabilities (V1) or context scores (V2), from transformers' own
    projections: forward hooks capture them; the softmax is computed here."""
    captured = []
    for module in model.modules():
        if type(module).__name__ == "MobileViTSelfAttention":
            store = {}
            module.query.register_forward_hook(lambda m, i, o, s=store: s.__setitem__("q", o))
            module.key.register_forward_hook(lambda m, i, o, s=store: s.__setitem__("k", o))
            captured.append((module, store))
        elif type(module).__name__ == "MobileViTV2LinearSelfAttention":
            store = {}
            module.qkv_proj.register_forward_hook(lambda m, i, o, s=store: s.__setitem__("qkv", o))
            captured.append((module, store))
    with torch.no_grad():
        model(torch.from_numpy(x))
    maps = []
    for module, store in captured:
        if "qkv" in store:  # (B, 1 + 2C, P, N): the query channel's softmax over the N patches
            maps.append(torch.softmax(store["qkv"][:, 0].double(), dim=-1).numpy())
        else:  # (B * P, N, C) -> heads
            heads, d = module.num_attention_heads, module.attention_head_size
            q, k = (
                t.reshape(t.shape[0], t.shape[1], heads, d).transpose(1, 2).double() for t in (store["q"], store["k"])
            )
            p = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1).numpy()
            maps.append(p.reshape(x.shape[0], -1, *p.shape[1:]))
    return maps


@pytest.mark.parametrize("family", ["v1", "v2"])
def test_attention_maps_match_transformers_projections(tmp_path, family):
    reference = torch_model(family, "classification", seed=9)
    model = tve.AutoModel.from_pretrained(save_checkpoint(reference, tmp_path))
    x = np.random.default_rng(0).random((2, 3, 96, 128), dtype=np.float32)
    got = model(x, output_attentions=True).attentions
    want = hooked_attention(reference, x)
    assert len(got) == len(want) == (9 if family == "v1" else 9)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * float(np.abs(w).max()))
        np.testing.assert_allclose(g.sum(-1), 1.0, rtol=1e-5)
    assert g.ndim == (5 if family == "v1" else 3)


def test_explain_writes_a_heatmap_per_layer(hub, tmp_path):
    env = {**os.environ, **hub[1]}
    tinyvit = str(Path(sys.executable).with_name("tinyvit"))
    for repo, what in (("apple/mobilevit-small", "query patch"), ("apple/mobilevitv2-1.0-imagenet1k-256", "context")):
        out = tmp_path / repo.split("/")[1]
        command = [tinyvit, "explain", PHOTOS[1], "--model", repo, "-o", str(out), "--point", "200,120"]
        r = subprocess.run(command, env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert what in r.stdout
        files = sorted(out.glob("*.png"))
        assert len(files) == 9 and Image.open(files[0]).size == (256, 256)
    r = subprocess.run(
        [tinyvit, "explain", PHOTOS[1], "--model", "apple/mobilevit-small", "-o", str(tmp_path), "--point", "5000,1"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "outside" in r.stderr and len(r.stderr.splitlines()) == 1
