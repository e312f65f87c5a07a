"""The faithfulness numbers against the floor, and against the statistics' own time.

Faithfulness (issue 20) runs 11 extra forward passes per measured sample, without
gradients, plus one per region mask: deletion at 10/25/50% and of everything, insertion
at 10/25/50%, random deletion at 10/25/50%, the input times the map. The
floor is one forward pass and one ``torch.autograd.grad`` back to the layer per sample.
At the defaults (``faithfulness_samples=24`` of ``metric_samples=256``) the faithfulness
work should cost at most the statistics' own (goal: faithfulness / statistics <= 1.0).

torchvision resnet18 (random weights), 64x64 inputs, chunks of 64, ``layer3``, two masks.

    python benchmarks/faithfulness_cost.py [--device cuda] [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import torch
import torchvision
from _common import interleaved, machine, parse_args, table, verdict
from statistics_cost import CHUNK, floor_pass, make_reader, statistics_pass

from gradcam_callback.explainer import Explainer
from gradcam_callback.faithfulness import Faithfulness
from gradcam_callback.options import ExplainOptions, StatisticsOptions
from gradcam_callback.tasks import Task

FAITHFUL = StatisticsOptions().faithfulness_samples
STATISTICS = StatisticsOptions().metric_samples


def faithfulness_pass(model, read, count: int, explained) -> None:
    """Faithfulness on ``count`` samples whose maps are already explained (its own cost)."""
    for start in range(0, count, CHUNK):
        indices = list(range(start, min(count, start + CHUNK)))
        inputs, _, masks = read(indices)
        maps, logits, explained_classes, layer_size = explained[start]

        def forward(x, device=inputs.device):
            with torch.no_grad():
                return model(x.to(device)).float().cpu()

        Faithfulness().measure(forward, inputs.cpu(), maps, layer_size,
                               Task("multiclass"), logits, explained_classes, indices, masks)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], rounds=3)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval().to(args.device)
    read = make_reader(args.device)
    layer = model.get_submodule("layer3")
    explainer = Explainer(ExplainOptions(target_layer="layer3", batch_size=CHUNK))
    explained = {}
    for start in range(0, FAITHFUL, CHUNK):
        inputs, labels, _ = read(list(range(start, min(FAITHFUL, start + CHUNK))))
        result = explainer.explain(model, inputs, labels, primary_only=True)
        explained[start] = (result.maps, result.logits, result.explained, result.layer_size)
    print(f"Machine: {machine(args)}")
    print(f"resnet18, 64x64, chunks of {CHUNK}, layer3, two masks, median of {args.rounds} "
          "interleaved rounds\n")
    times = interleaved({
        "floor": lambda: floor_pass(model, read, FAITHFUL, layer),
        "faithfulness": lambda: faithfulness_pass(model, read, FAITHFUL, explained),
        "statistics": lambda: statistics_pass(model, read, STATISTICS),
    }, args.rounds, args.device, warmup=1)
    per_sample = times["faithfulness"] / times["floor"]
    share = times["faithfulness"] / times["statistics"]
    rows = [
        (f"faithfulness / floor, per sample ({FAITHFUL} samples)", f"{per_sample:.1f}x",
         "(11 + 2 forwards)", "", f"{times['faithfulness'] / FAITHFUL * 1e3:.2f} / "
         f"{times['floor'] / FAITHFUL * 1e3:.2f} ms per sample"),
        (f"faithfulness ({FAITHFUL}) / statistics ({STATISTICS})", f"{share:.2f}x", "<= 1.00x",
         verdict(share, 1.0), f"{times['faithfulness'] * 1e3:.0f} / "
         f"{times['statistics'] * 1e3:.0f} ms a run"),
    ]
    print(table(rows, ("measure", "value", "goal", "", "detail")))


if __name__ == "__main__":
    main()
