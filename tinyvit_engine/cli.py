"""The `tinyvit` command: convert checkpoints, classify and segment images, describe a weights file.

A user error (missing file, bad weights, unsupported config, no network) prints one line on stderr and exits 1;
--debug shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from . import weights_file
from .errors import TinyVitError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
BATCH = 8


class CliError(TinyVitError):
    """A user error the command reports in one line."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
        return 0
    except (TinyVitError, OSError, ValueError, TypeError) as e:
        if args.debug:
            raise
        message = " ".join(str(e).splitlines()) or type(e).__name__  # one line, even for multi-line messages
        print(f"tinyvit {args.command}: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinyvit", description="MobileViT inference on the CPU, without torch.")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run, help: str, example: str) -> argparse.ArgumentParser:
        c = sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        c.set_defaults(run=run)
        return c

    c = command(
        "convert",
        run_convert,
        "convert a transformers checkpoint into one engine weights file",
        "tinyvit convert path/to/mobilevit-xx-small -o mobilevit-xx-small.safetensors",
    )
    c.add_argument("src", help="a checkpoint directory, or a Hub id such as apple/mobilevit-xx-small")
    c.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    c.add_argument(
        "--dtype",
        default="float32",
        help="how conv and linear weights are stored: float32 (default), float16, or int8 (per output channel)",
    )

    c = command(
        "classify",
        run_classify,
        "print the top labels of each image",
        "tinyvit classify photo.jpg photos/ --model mobilevit-xx-small.safetensors --top-k 3",
    )
    c.add_argument("images", nargs="+", help="image files or directories (walked for images)")
    c.add_argument("--model", help="engine weights file or checkpoint directory (default: the demo digits classifier)")
    c.add_argument("--top-k", type=int, default=5, help="labels per image (default 5)")
    c.add_argument("--json", action="store_true", help="one JSON object per image on stdout")

    c = command(
        "segment",
        run_segment,
        "write a label map and an overlay per image; print each label's share",
        "tinyvit segment photo.jpg --model deeplabv3-mobilevit-xx-small.safetensors -o out/",
    )
    c.add_argument("images", nargs="+", help="image files or directories (walked for images)")
    c.add_argument("--model", help="engine weights file or checkpoint directory (default: the demo digits segmenter)")
    c.add_argument("-o", "--output", required=True, help="directory for <name>.labels.png and <name>.overlay.png")

    c = command(
        "explain",
        run_explain,
        "write a heatmap per transformer layer: where the global attention looks",
        "tinyvit explain photo.jpg --model mobilevit-small.safetensors -o out/ --point 120,80",
    )
    c.add_argument("image", help="an image file")
    c.add_argument("--model", help="engine weights file, checkpoint directory or Hub id (default: the demo classifier)")
    c.add_argument("-o", "--output", required=True, help="directory for <name>.layer<i>.png")
    c.add_argument("--point", help="X,Y: the query pixel of the image, for MobileViT (default: the centre)")

    c = command(
        "info",
        run_info,
        "describe a weights file or checkpoint: family, task, size, labels",
        "tinyvit info mobilevit-xx-small.safetensors",
    )
    c.add_argument("model", help="engine weights file or checkpoint directory")
    return p


def run_convert(args) -> None:
    from .convert import convert
    from .hub import resolve

    if args.dtype not in weights_file.STORAGE:
        raise CliError(f"--dtype {args.dtype}: expected one of {', '.join(weights_file.STORAGE)}")
    out = convert(resolve(args.src), args.output, dtype=args.dtype)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {args.dtype} weights)")


def _load(path: str | None, command: str | None = None):
    """The model at `path`, or for classify/segment without --model, the demo model that ships in weights/."""
    from .model import load
    from .weights import DEMO_CLASSIFIER, DEMO_SEGMENTER

    if path is None:
        demo = {"classify": DEMO_CLASSIFIER, "segment": DEMO_SEGMENTER}[command]
        if not demo.is_file():
            raise CliError(f"no --model given, and the demo model {demo.name} is not installed")
        path = str(demo)
    return load(path)


def _images(paths: list[str]) -> list[Path]:
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.exists():
            found.append(p)
        else:
            raise CliError(f"{p}: no such file or directory")
    if not found:
        raise CliError(f"no images found in {' '.join(paths)}")
    return found


def _batches(files: list[Path]):
    """Batches of files, with a progress bar on stderr when there are many."""
    show = len(files) > BATCH
    for start in range(0, len(files), BATCH):
        yield files[start : start + BATCH]
        if show:
            done = min(start + BATCH, len(files))
            bar = "#" * (30 * done // len(files))
            print(f"\r[{bar:<30}] {done}/{len(files)}", end="\n" if done == len(files) else "", file=sys.stderr)


def run_classify(args) -> None:
    model = _load(args.model, "classify")
    for batch in _batches(_images(args.images)):
        for path, top in zip(batch, model.classify([str(p) for p in batch], top_k=args.top_k), strict=True):
            if args.json:
                print(json.dumps({"image": str(path), "labels": top}))
            else:
                print(f"{path}: " + ", ".join(f"{t['label']} ({t['score']:.3f})" for t in top))


def palette(n: int = 256) -> np.ndarray:
    """Pascal VOC's colour map: class k's RGB from the bits of k, so neighbouring classes differ."""
    colors = np.zeros((n, 3), np.uint8)
    for k in range(n):
        c, r, g, b = k, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colors[k] = (r, g, b)
    return colors


def run_segment(args) -> None:
    from PIL import Image

    from .processor import load_image

    model = _load(args.model, "segment")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    colors = palette()
    for batch in _batches(_images(args.images)):
        for path, result in zip(batch, model.segment([str(p) for p in batch]), strict=True):
            label_map = result["label_map"]
            labels = Image.fromarray(label_map.astype(np.uint8), mode="P")
            labels.putpalette(colors.tobytes())
            labels.save(out / f"{path.stem}.labels.png")
            photo = np.asarray(load_image(str(path)), np.float32)
            overlay = np.where(label_map[..., None] > 0, 0.4 * photo + 0.6 * colors[label_map], photo)
            Image.fromarray(overlay.round().astype(np.uint8)).save(out / f"{path.stem}.overlay.png")
            counts = np.bincount(label_map.ravel(), minlength=model.config.num_labels)
            shares = ", ".join(
                f"{model.config.id2label[k]} {100 * c / label_map.size:.1f}%"
                for k, c in sorted(enumerate(counts), key=lambda kc: -kc[1])
                if c
            )
            print(f"{path}: {shares}")


def run_explain(args) -> None:
    from .explain import heatmaps, overlay
    from .hub import resolve

    point = None
    if args.point is not None:
        try:
            point = tuple(float(v) for v in args.point.split(","))
        except ValueError:
            point = ()
        if len(point) != 2:
            raise CliError(f"--point {args.point!r}: expected X,Y (pixels of the image), such as 120,80")
    model = _load(None if args.model is None else str(resolve(args.model)), "classify")
    view, maps, query = heatmaps(model, args.image, point)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    for i, heat in enumerate(maps):
        overlay(view, heat, query).save(out / f"{stem}.layer{i}.png")
    what = "attention of the query patch" if query is not None else "context scores"
    print(f"{args.image}: {len(maps)} layers ({what}) -> {out}/{stem}.layer0..{len(maps) - 1}.png")


def run_info(args) -> None:
    model = _load(args.model)
    cfg = model.config
    path = Path(args.model)
    if path.is_file():
        metadata, _ = weights_file.parse(path.read_bytes(), str(path))
        storage = weights_file.storage_of(metadata, str(path))
        version = f"{weights_file.FORMAT} v{metadata['format_version']}, {storage} weights"
        version += f", {path.stat().st_size / 1e6:.2f} MB"
    else:
        version = "transformers checkpoint directory"
    crop = (model.preprocessor_config or {}).get("crop_size", cfg.image_size)
    labels = list(cfg.id2label.values())
    print(f"model: {path}")
    print(f"family: {cfg.model_type} ({cfg.architecture})")
    print(f"task: {cfg.task}")
    count = sum(math.prod(shape) for shape in model.graph.params().values())
    print(f"parameters: {count:,} (BatchNorm folded into convs)")
    print(f"input size: {crop}")
    print(f"labels: {len(labels)}: {', '.join(labels[:10])}{', ...' if len(labels) > 10 else ''}")
    print(f"format: {version}")


if __name__ == "__main__":
    sys.exit(main())
