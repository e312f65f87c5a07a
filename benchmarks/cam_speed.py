"""compute_cam against the floor and against pytorch-grad-cam (issue goals 1 and 2).

The floor is the least any Grad-CAM must do: one forward pass and one
``torch.autograd.grad`` back to the target layer. torchvision resnet18 (random weights),
batch 16, 224x224; then a small 1-D network on signals and a small 3-D network on volumes.

    python benchmarks/cam_speed.py [--device cuda] [--threads 2] [--rounds 7]
"""

from __future__ import annotations

import warnings

import torch
import torchvision
from _common import interleaved, machine, parse_args, table, verdict

from gradcam_callback import compute_cam


def floor(model, inputs, layer):
    """Forward + autograd.grad of the predicted scores to the layer's output."""
    kept = {}
    handle = layer.register_forward_hook(lambda _m, _a, out: kept.setdefault("a", out))
    try:
        logits = model(inputs)
    finally:
        handle.remove()
    score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
    return torch.autograd.grad(score, kept["a"])


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pytorch_grad_cam as pgc

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1000).eval().to(args.device)
    inputs = torch.randn(16, 3, 224, 224, device=args.device)
    print(f"Machine: {machine(args)}")
    print(f"resnet18, batch 16, 224x224, median of {args.rounds} interleaved rounds\n")

    rows = []
    for name in ("layer4", "layer2"):
        layer = model.get_submodule(name)
        explainer = pgc.GradCAM(model=model, target_layers=[layer])
        times = interleaved({
            "floor": lambda layer=layer: floor(model, inputs, layer),
            "ours": lambda name=name: compute_cam(model, inputs, name),
            "pytorch-grad-cam": lambda explainer=explainer: explainer(input_tensor=inputs,
                                                                      targets=None),
        }, args.rounds, args.device)
        ours_floor = times["ours"] / times["floor"]
        ours_pgc = times["ours"] / times["pytorch-grad-cam"]
        rows += [
            (f"gradcam {name}: ours / floor", f"{ours_floor:.2f}x", "<= 1.10x",
             verdict(ours_floor, 1.10),
             f"{times['ours'] * 1e3:.0f} / {times['floor'] * 1e3:.0f} ms"),
            (f"gradcam {name}: ours / pytorch-grad-cam", f"{ours_pgc:.2f}x", "<= 0.40x",
             verdict(ours_pgc, 0.40), f"{times['ours'] * 1e3:.0f} / "
             f"{times['pytorch-grad-cam'] * 1e3:.0f} ms"),
        ]

    # Eigen-CAM: the forward pass dominates both, so compare the step that differs, the
    # projection on the first principal component (ours: one batched torch.linalg.svd;
    # theirs: a numpy SVD per image), on the same layer4 activations; then end to end.
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    from gradcam_callback.engine.methods import _eigencam

    with torch.no_grad():
        acts = model.conv1(inputs)
        for stage in (model.bn1, model.relu, model.maxpool, model.layer1, model.layer2,
                      model.layer3, model.layer4):
            acts = stage(acts)
    acts_numpy = acts.float().cpu().numpy()
    times = interleaved({
        "ours": lambda: _eigencam(acts.float(), None),
        "pytorch-grad-cam": lambda: get_2d_projection(acts_numpy),
    }, args.rounds, args.device)
    speedup = times["pytorch-grad-cam"] / times["ours"]
    rows.append(("eigencam SVD step, layer4: speed-up", f"{speedup:.1f}x", ">= 5x",
                 verdict(speedup, 5.0, lower_is_better=False),
                 f"{times['ours'] * 1e3:.1f} / {times['pytorch-grad-cam'] * 1e3:.1f} ms"))
    eigen = pgc.EigenCAM(model=model, target_layers=[model.layer4])
    times = interleaved({
        "ours": lambda: compute_cam(model, inputs, "layer4", method="eigencam"),
        "pytorch-grad-cam": lambda: eigen(input_tensor=inputs, targets=None),
    }, args.rounds, args.device)
    speedup = times["pytorch-grad-cam"] / times["ours"]
    rows.append(("eigencam layer4 end to end: speed-up", f"{speedup:.1f}x", "(info)", "",
                 f"{times['ours'] * 1e3:.0f} / {times['pytorch-grad-cam'] * 1e3:.0f} ms"))
    rows += signal_and_volume_rows(args)
    print(table(rows, ("measure", "value", "goal", "", "times")))


def signal_and_volume_rows(args) -> list[tuple[str, ...]]:
    """compute_cam / floor on a small 1-D network (signals, batch 32 x 2 x 4096) and a small
    3-D network (volumes, batch 4 x 1 x 64^3), the layer before the pooling head."""
    from torch import nn

    torch.manual_seed(0)
    signal = nn.Sequential(
        nn.Conv1d(2, 32, 7, padding=3), nn.ReLU(), nn.MaxPool1d(4),
        nn.Conv1d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool1d(4),
        nn.Conv1d(64, 128, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(128, 5)).eval().to(args.device)
    volume = nn.Sequential(
        nn.Conv3d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
        nn.Conv3d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
        nn.Conv3d(32, 64, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(64, 2)).eval().to(args.device)
    rows = []
    for name, model, inputs in (
            ("signals 1-D", signal, torch.randn(32, 2, 4096, device=args.device)),
            ("volumes 3-D", volume, torch.randn(4, 1, 64, 64, 64, device=args.device))):
        times = interleaved({
            "floor": lambda model=model, inputs=inputs: floor(model, inputs, model[7]),
            "ours": lambda model=model, inputs=inputs: compute_cam(model, inputs, "7"),
        }, args.rounds, args.device)
        ratio = times["ours"] / times["floor"]
        rows.append((f"gradcam {name}: ours / floor", f"{ratio:.2f}x", "<= 1.05x",
                     verdict(ratio, 1.05),
                     f"{times['ours'] * 1e3:.0f} / {times['floor'] * 1e3:.0f} ms"))
    return rows


if __name__ == "__main__":
    main()
