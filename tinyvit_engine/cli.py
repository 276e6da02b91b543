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

from .errors import TinyVitError
from .formats import resolve, weights_file


class CliError(TinyVitError):
    """A user error the command reports in one line."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.threads is not None:
            _set_threads(args.threads)
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


def _set_threads(n: int) -> None:
    import numba

    pool = numba.config.NUMBA_NUM_THREADS  # Numba's pool, fixed at start: the cores it sees, or NUMBA_NUM_THREADS
    if not 1 <= n <= pool:
        raise CliError(f"--threads {n}: expected 1 to {pool} (the threads Numba started with; NUMBA_NUM_THREADS)")
    numba.set_num_threads(n)


def jobs(c: argparse.ArgumentParser, workers: bool) -> None:
    """The options of a batch job (tinyvit_engine/jobs)."""
    c.add_argument("--output", help="also write one JSON object per image to this JSON Lines file, as they finish")
    c.add_argument("--resume", action="store_true", help="skip the images --output already records, append the rest")
    if workers:
        c.add_argument("--workers", type=int, default=1, help="inference processes, each with its share of the cores")
    c.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run on Ray Data: a local Ray instance, or the cluster at ADDRESS (needs the ray extra)",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinyvit", description="MobileViT inference on the CPU, without torch.")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    p.add_argument("--threads", type=int, help="threads for inference (default: every core)")
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
        c.add_argument(
            "--threads", type=int, default=argparse.SUPPRESS, help="threads for inference (default: every core)"
        )
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
    c.add_argument("images", nargs="+", help="image files, folders (walked for images), or @list.txt of paths")
    c.add_argument("--model", help="engine weights file, checkpoint directory or Hub id (default: the demo classifier)")
    c.add_argument("--top-k", type=int, default=5, help="labels per image (default 5)")
    c.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    jobs(c, workers=True)

    c = command(
        "segment",
        run_segment,
        "write a label map and an overlay per image; print each label's share",
        "tinyvit segment photo.jpg --model deeplabv3-mobilevit-xx-small.safetensors -o out/",
    )
    c.add_argument("images", nargs="+", help="image files, folders (walked for images), or @list.txt of paths")
    c.add_argument("--model", help="engine weights file, checkpoint directory or Hub id (default: the demo segmenter)")
    c.add_argument("-o", dest="outdir", required=True, help="directory for <name>.labels.png and <name>.overlay.png")
    jobs(c, workers=False)

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
        "serve",
        run_serve,
        "serve a model over HTTP: POST /predict, health and metadata (pip install 'tinyvit-engine[serve]')",
        "tinyvit serve mobilevit-xx-small.safetensors --port 8000 --api-key $KEY",
    )
    c.add_argument(
        "model", nargs="?", help="engine weights file, checkpoint directory or Hub id (default: the demo classifier)"
    )
    c.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this machine only)"
    )
    c.add_argument("--port", type=int, default=8000, help="the port (default 8000)")
    c.add_argument("--api-key", help="require Authorization: Bearer <key> on /predict, /explain and /v2/models")
    c.add_argument(
        "--max-batch",
        type=int,
        default=4,
        choices=[1, 2, 4, 8],
        help="run up to this many waiting images as one batch (1, 2, 4 or 8; default 4; 1: no batching)",
    )
    c.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to send a request, and again for its answer (default 30)"
    )
    c.add_argument(
        "--queue", type=int, default=64, help="images that may wait for the model; past that, 429 (default 64)"
    )

    c = command(
        "info",
        run_info,
        "describe a weights file or checkpoint: family, task, size, labels",
        "tinyvit info mobilevit-xx-small.safetensors",
    )
    c.add_argument("model", help="engine weights file, checkpoint directory or Hub id")
    return p


def run_convert(args) -> None:
    from .formats.convert import convert

    if args.dtype not in weights_file.STORAGE:
        raise CliError(f"--dtype {args.dtype}: expected one of {', '.join(weights_file.STORAGE)}")
    out = convert(resolve(args.src), args.output, dtype=args.dtype)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {args.dtype} weights)")


def _model_path(path: str | None, command: str | None = None) -> str:
    """`path` (a Hub id resolved to its local snapshot), or for classify/segment without --model, the demo model
    that ships in weights/."""
    from .weights import DEMO_CLASSIFIER, DEMO_SEGMENTER

    if path is None:
        demo = {"classify": DEMO_CLASSIFIER, "segment": DEMO_SEGMENTER}[command]
        if not demo.is_file():
            raise CliError(f"no --model given, and the demo model {demo.name} is not installed")
        return str(demo)
    return str(resolve(path))


def _load(path: str | None, command: str | None = None):
    from .model import load

    return load(_model_path(path, command))


def _job(args, task: str, handle) -> None:
    """Run a batch job; bad files are reported and skipped, and a job with any ends with exit status 1."""
    from . import jobs

    if args.resume and not args.output:
        raise CliError("--resume needs --output: the file of finished images to skip")
    if args.ray is not None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise CliError("--ray needs Ray: pip install 'tinyvit-engine[ray]'") from None
    files = jobs.expand(args.images)
    if not files:
        raise CliError(f"no images found in {' '.join(args.images)}")
    model_path = _model_path(args.model, task)
    model = _load(model_path)
    needed = {"classify": "image-classification", "segment": "semantic-segmentation"}[task]
    if model.config.task != needed:
        raise CliError(f"{task} needs an {needed} model; {model_path} is {model.config.task}")

    def report(record: dict) -> None:
        if "error" in record:
            print(f"tinyvit {task}: {record['image']}: {record['error']}", file=sys.stderr, flush=True)
        else:
            handle(record)

    output = Path(args.output) if args.output else None
    finished, failed = jobs.run(
        model,
        task,
        files,
        report,
        output=output,
        resume=args.resume,
        top_k=getattr(args, "top_k", 5),
        workers=getattr(args, "workers", 1),
        ray_address=args.ray,
        outdir=Path(args.outdir) if task == "segment" else None,
    )
    if failed:
        raise CliError(f"{failed} of {finished} images failed (each named above); the rest are done")


def run_classify(args) -> None:
    def show(record: dict) -> None:
        if args.json:
            print(json.dumps(record), flush=True)
        else:
            top = record["labels"]
            print(f"{record['image']}: " + ", ".join(f"{t['label']} ({t['score']:.3f})" for t in top), flush=True)

    if args.top_k < 1:
        raise CliError(f"--top-k {args.top_k}: expected 1 or more")
    _job(args, "classify", show)


def run_segment(args) -> None:
    from .jobs import save_maps

    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)

    def write(record: dict) -> None:
        path = Path(record["image"])
        if "label_map" in record:  # (a Ray job's actors save the maps themselves)
            save_maps(out, path, record["label_map"])
        shares = sorted(record["shares"].items(), key=lambda kv: -kv[1])
        print(f"{path}: " + ", ".join(f"{label} {100 * share:.1f}%" for label, share in shares), flush=True)

    _job(args, "segment", write)


def run_explain(args) -> None:
    from .api.explain import heatmaps, overlay

    point = None
    if args.point is not None:
        try:
            point = tuple(float(v) for v in args.point.split(","))
        except ValueError:
            point = ()
        if len(point) != 2:
            raise CliError(f"--point {args.point!r}: expected X,Y (pixels of the image), such as 120,80")
    model = _load(args.model, "classify")
    view, maps, query = heatmaps(model, args.image, point)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    for i, heat in enumerate(maps):
        overlay(view, heat, query).save(out / f"{stem}.layer{i}.png")
    what = "attention of the query patch" if query is not None else "context scores"
    print(f"{args.image}: {len(maps)} layers ({what}) -> {out}/{stem}.layer0..{len(maps) - 1}.png")


def run_serve(args) -> None:
    import numba

    try:
        from .serve import Limits, serve
    except ImportError as e:
        raise CliError(
            f"needs Starlette, uvicorn and python-multipart: pip install 'tinyvit-engine[serve]' ({e})"
        ) from None
    if not 0 < args.timeout <= 3600:
        raise CliError(f"--timeout {args.timeout:g}: expected seconds in (0, 3600]")
    if not 1 <= args.queue <= 100_000:
        raise CliError(f"--queue {args.queue}: expected 1 to 100000 images")
    path = _model_path(args.model, "classify")
    limits = Limits(batch=args.max_batch, seconds=args.timeout, queue=args.queue)
    print(f"serving {path} on http://{args.host}:{args.port} (the page at /; POST /predict, /explain)", flush=True)
    serve(path, args.host, args.port, args.api_key, numba.get_num_threads(), limits)


def run_info(args) -> None:
    path = Path(_model_path(args.model))
    model = _load(str(path))
    cfg = model.config
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
    raise SystemExit(main())
