"""``gradcam-callback explain``: Grad-CAM for image files from a trained checkpoint.

Also runs as ``python -m gradcam_callback``. Every anticipated bad input (a missing file,
an unreadable image, a class that does not import, a checkpoint that does not fit, an
unknown layer) ends with one line on stderr and exit status 2; ``--debug`` shows the
traceback of anything else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gradcam_callback.engine import available_methods, explain_batch, get_method
from gradcam_callback.engine.targets import TASKS
from gradcam_callback.engine.transforms import check_reading
from gradcam_callback.errors import UsageError

EXAMPLES = """\
examples:
  # a LightningModule checkpoint (from Trainer or ModelCheckpoint)
  gradcam-callback explain --checkpoint run.ckpt --model mypkg.models:LitNet \\
      --layer backbone.layer4 --image cat.png dog.jpg --out explained/

  # a plain nn.Module: a class or factory, its arguments, and a state_dict
  gradcam-callback explain --model torchvision.models:resnet18 --model-arg num_classes=10 \\
      --weights resnet18.pth --image a.png --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225

  # any timm/torchvision model as built (no --weights: a warning; random unless built in),
  # a vision transformer included: layer and token layout are found automatically
  gradcam-callback explain --model timm:create_model --model-arg model_name=vit_tiny_patch16_224 \\
      --image photo.jpg --alpha 0.4

  # explain the true class instead of the predicted one
  gradcam-callback explain ... --image a.png b.png --target label --labels cat dog \\
      --class-names names.txt

  # a one-logit yes/no model: each image's predicted side (found without --task too)
  gradcam-callback explain ... --image scan.png --task binary --class-names sides.txt

Writes <image>_heatmap.png and <image>_overlay.png per image and grid.png with all of
them; prints the predicted class and its probability per image. Without --layer a layer
is chosen (a CNN's last spatial block, a ViT's last pre-attention norm, a Swin's last
norm) and printed with how its output was read. Images keep their aspect ratio: the
shorter side is resized to --size and the centre cropped (--resize crop, the default).
"""


CliError = UsageError
RESIZE_MODES = ("crop", "squash", "none")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradcam-callback",
        description="Grad-CAM for trained image models, from the command line.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    explain = commands.add_parser(
        "explain", help="explain image files with a trained model", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compute Grad-CAM for image files with a trained model and write "
                    "heatmaps, overlays and an annotated grid.",
    )
    _model_and_image_arguments(explain)
    explain.add_argument("--out", type=Path, default=Path("gradcam_out"),
                         help="output directory (default: gradcam_out)")
    explain.add_argument("--target", default="predicted",
                         help="predicted (default), label (needs --labels), a class index, or "
                              "a class name from --class-names")
    explain.add_argument("--labels", nargs="+", help="one true class per image (index or name)")
    explain.add_argument("--threshold", type=float, default=0.5,
                         help="multilabel: labels above this sigmoid are predicted (default 0.5)")
    explain.add_argument("--class-names", type=Path, help="a text file, one class name a line")
    explain.add_argument("--colormap", default="jet", help="matplotlib colormap (default jet)")
    explain.add_argument("--alpha", type=float, default=0.5,
                         help="heatmap opacity in the overlays, 0 to 1 (default 0.5)")
    sanity = commands.add_parser(
        "sanity", help="does a model's Grad-CAM change when its head is re-initialised?",
        description="The sanity check (Adebayo et al., 2018): explain the images with the "
                    "trained model and with its last --layers layers re-initialised, each "
                    "image for the class the trained model predicts, and print the rank "
                    "correlation of the two maps (near 1: the maps follow the input, not "
                    "what the model learned).")
    _model_and_image_arguments(sanity)
    sanity.add_argument("--layers", type=int, default=1,
                        help="how many of the last layers with parameters to re-initialise "
                             "(default 1: the head)")
    return parser


def _model_and_image_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``explain`` and ``sanity`` share: the model, the images, the layer."""
    parser.add_argument("--model", required=True, metavar="MODULE:CLASS",
                        help="the model class (a LightningModule, or an nn.Module class or "
                            "factory), e.g. mypkg.models:LitNet or torchvision.models:resnet18")
    parser.add_argument("--checkpoint", type=Path, help="a Lightning checkpoint (.ckpt)")
    parser.add_argument("--weights", type=Path, help="a state_dict file for a plain nn.Module")
    parser.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="argument for the model class or factory (repeatable)")
    parser.add_argument("--image", nargs="+", required=True, type=Path, help="image files")
    parser.add_argument("--layer", help="target layer's dotted name (default: auto-detect)")
    parser.add_argument("--method", default="gradcam", choices=available_methods())
    parser.add_argument("--task", default="auto", choices=TASKS,
                        help="what the model is trained for (default auto: a one-logit "
                            "output is binary, (N, C, h, w) segmentation, else multiclass); "
                            "binary explains the predicted side, -logit for a negative one")
    parser.add_argument("--size", type=int, default=224,
                        help="images become SIZE x SIZE (default 224), see --resize")
    parser.add_argument("--resize", choices=RESIZE_MODES, default="crop",
                        help="crop (default): resize the shorter side to SIZE, keeping the "
                            "aspect ratio, and crop the centre; squash: resize to SIZE x SIZE, "
                            "distorting; none: native size (all images the same size)")
    parser.add_argument("--reshape-transform", default="auto", metavar="READING",
                        help="how to read the layer's output: auto (default), nchw, nhwc, "
                            "tokens, tokens:<prefix count>")
    parser.add_argument("--grayscale", action="store_true", help="feed 1-channel images")
    parser.add_argument("--mean", type=float, nargs="+", help="per-channel normalisation mean")
    parser.add_argument("--std", type=float, nargs="+", help="per-channel normalisation std")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return sanity(args) if args.command == "sanity" else explain(args)
    except CliError as error:
        print(f"gradcam-callback: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # anything else: still one line, unless --debug
        if args.debug:
            raise
        print(f"gradcam-callback: error: {type(error).__name__}: {error} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 2


def explain(args: argparse.Namespace) -> int:
    class_names = _read_class_names(args.class_names)
    if not 0 <= args.alpha <= 1:
        raise CliError(f"--alpha must be in [0, 1], got {args.alpha}")
    try:
        reading = check_reading(args.reshape_transform, "--reshape-transform")
    except ValueError as error:
        raise CliError(str(error)) from None
    images = _read_images(args.image, args.size, args.grayscale, args.resize)
    inputs = _normalise(images, args.mean, args.std)
    from gradcam_callback.cli.loading import load_model

    model = load_model(args.model, args.model_arg, args.checkpoint, args.weights)
    targets = _targets(args, class_names, len(args.image))
    if not 0 < args.threshold < 1:
        raise CliError(f"--threshold must be strictly between 0 and 1, got {args.threshold}")
    from gradcam_callback.tasks import read_task

    try:
        result = explain_batch(model, inputs, args.layer, targets, method=args.method,
                               reshape_transform=reading, task=args.task)
        task = read_task(args.task, result.logits.detach().cpu(), None,
                         target="predicted" if targets is None else 0,
                         threshold=args.threshold)
    except ValueError as error:
        raise CliError(str(error)) from None
    chosen = " (auto-detected)" if args.layer is None else ""
    print(f"layer: {result.layer_name}{chosen}: {result.reading}")
    if args.task == "auto" and task.name != "multiclass":
        print(f"task: {task.name} ({task.source}); pass --task to choose another")

    from gradcam_callback.render import (
        encode_image,
        explanation_grid,
        heatmap,
        overlay,
        resize_tiles,
        to_uint8,
    )

    args.out.mkdir(parents=True, exist_ok=True)
    overlays = overlay(images, result.cams, colormap=args.colormap, alpha=args.alpha)
    heatmaps = to_uint8(heatmap(result.cams, colormap=args.colormap))
    lines, _ = task.captions(result.logits.cpu(), None, class_names)
    for i, path in enumerate(args.image):
        (args.out / f"{path.stem}_heatmap.png").write_bytes(encode_image(heatmaps[i]))
        (args.out / f"{path.stem}_overlay.png").write_bytes(encode_image(overlays[i]))
        if not lines[i]:
            continue
        text = lines[i][0].removeprefix("pred: ")
        if task.name in ("multiclass", "binary"):  # "<class> <p>": "predicted <class> (p=<p>)"
            name, _, probability = text.rpartition(" ")
            print(f"{path}: predicted {name} (p={probability})")
        else:
            print(f"{path}: predicted {text}")
    captions = [[path.name, *lines[i]] for i, path in enumerate(args.image)]
    grid = explanation_grid(resize_tiles(images, 256),
                            [(get_method(args.method).title, result.cams)], captions,
                            colormap=args.colormap, alpha=args.alpha)
    (args.out / "grid.png").write_bytes(encode_image(grid))
    print(f"wrote {len(args.image)} heatmaps and overlays and grid.png to {args.out}")
    return 0


def sanity(args: argparse.Namespace) -> int:
    """``gradcam-callback sanity``: the rank correlation of each image's maps with and
    without the trained head (:mod:`gradcam_callback.sanity`)."""
    if args.layers < 1:
        raise CliError(f"--layers must be at least 1, got {args.layers}")
    try:
        reading = check_reading(args.reshape_transform, "--reshape-transform")
    except ValueError as error:
        raise CliError(str(error)) from None
    inputs = _normalise(_read_images(args.image, args.size, args.grayscale, args.resize),
                        args.mean, args.std)
    from gradcam_callback.cli.loading import load_model
    from gradcam_callback.sanity import sanity_check
    from gradcam_callback.tasks import read_task

    model = load_model(args.model, args.model_arg, args.checkpoint, args.weights)
    try:
        first = explain_batch(model, inputs, args.layer, None, method=args.method,
                              reshape_transform=reading, task=args.task)
        task = read_task(args.task, first.logits.detach().cpu(), None, target="predicted")
        predicted = task.predicted(first.logits.detach().cpu())

        def maps(net: torch.nn.Module, x: Tensor) -> Tensor:
            return explain_batch(net, x, first.layer_name, predicted, method=args.method,
                                 reshape_transform=reading, output_size=None,
                                 normalize=False, task=task.name).cams

        result = sanity_check(model, inputs, maps, layers=args.layers)
    except ValueError as error:
        raise CliError(str(error)) from None
    print(f"layer: {first.layer_name}; re-initialised: {', '.join(result.reinitialised)}")
    for path, value in zip(args.image, result.correlations.tolist(), strict=True):
        print(f"{path}: rank correlation {value:.3f}")
    scalars = result.scalars()
    if "sanity/rank_correlation" in scalars:
        spread = scalars.get("sanity/rank_correlation_ci95")
        print(f"mean rank correlation {scalars['sanity/rank_correlation']:.3f}"
              + (f" ± {spread:.3f} (95%)" if spread is not None else ""))
    warning = result.warning()
    print(f"warning: {warning}" if warning else
          "ok: the maps change with the head, so they depend on what the model learned")
    return 0


def _read_class_names(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    if not path.is_file():
        raise CliError(f"--class-names: no such file: {path}")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise CliError(f"--class-names: {path} has no class names (one per line)")
    return names


def _read_images(paths: list[Path], size: int, grayscale: bool, resize: str) -> Tensor:
    """The images as one float batch in ``[0, 1]``, ``(N, C, H, W)``.

    ``resize``: ``"crop"`` scales the shorter side to ``size`` (aspect ratio kept) and
    crops the centre square; ``"squash"`` scales to ``size x size``; ``"none"`` keeps the
    native size, which must then be the same for all images.
    """
    from PIL import Image, UnidentifiedImageError

    if size < 8:
        raise CliError(f"--size must be at least 8, got {size}")
    tensors = []
    for path in paths:
        if not path.is_file():
            raise CliError(f"--image: no such file: {path}")
        try:
            with Image.open(path) as image:
                picture = _resized(image.convert("L" if grayscale else "RGB"), size, resize)
        except (UnidentifiedImageError, OSError) as error:
            raise CliError(f"--image: cannot read {path} as an image ({error})") from None
        array = torch.frombuffer(bytearray(picture.tobytes()), dtype=torch.uint8)
        channels = 1 if grayscale else 3
        tensors.append(array.view(picture.height, picture.width, channels).permute(2, 0, 1)
                       .float() / 255)
    sizes = {tuple(t.shape[1:]) for t in tensors}
    if len(sizes) > 1:
        listed = ", ".join(f"{t.shape[1]}x{t.shape[2]} ({p.name})" for t, p in zip(
            tensors, paths, strict=True))
        raise CliError(f"--resize none needs images of one size, got {listed}; use --resize "
                       "crop or squash")
    return torch.stack(tensors)


def _resized(picture: Any, size: int, resize: str) -> Any:
    from PIL import Image

    if resize == "none":
        return picture
    if resize == "squash":
        return picture.resize((size, size), Image.Resampling.BILINEAR)
    scale = size / min(picture.width, picture.height)
    width = max(size, round(picture.width * scale))
    height = max(size, round(picture.height * scale))
    scaled = picture.resize((width, height), Image.Resampling.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    return scaled.crop((left, top, left + size, top + size))


def _normalise(images: Tensor, mean: list[float] | None, std: list[float] | None) -> Tensor:
    if (mean is None) != (std is None):
        raise CliError("--mean and --std go together (one value per channel each)")
    if mean is None or std is None:
        return images
    channels = images.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise CliError(f"--mean and --std need {channels} values each (one per channel), got "
                       f"{len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise CliError(f"--std values must be > 0, got {std}")
    shape = (1, channels, 1, 1)
    return (images - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def _targets(args: argparse.Namespace, class_names: list[str] | None, count: int) -> Any:
    if args.target == "predicted":
        return None
    if args.target == "label":
        if not args.labels or len(args.labels) != count:
            raise CliError(f"--target label needs --labels with one class per image ({count}), "
                           f"got {len(args.labels or [])}")
        return [_class_index(label, class_names, "--labels") for label in args.labels]
    return _class_index(args.target, class_names, "--target")


def _class_index(value: str, class_names: list[str] | None, option: str) -> int:
    if value.isdigit():
        return int(value)
    if class_names is not None and value in class_names:
        return class_names.index(value)
    names = f" or a name from --class-names {class_names}" if class_names else ""
    raise CliError(f"{option}: {value!r} is not a class index{names}")


def _name(index: int, class_names: list[str] | None) -> str:
    if class_names is not None and 0 <= index < len(class_names):
        return class_names[index]
    return str(index)


if __name__ == "__main__":
    sys.exit(main())
