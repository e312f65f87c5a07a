#!/usr/bin/env bash
# Screenshots of TensorBoard's dashboards, for the README. Optional, not part of
# `make test`. Needs Debian's chromium (apt-get install chromium).
#
#   scripts/tensorboard_screenshot.sh [LOGDIR] [OUT.png] [DASHBOARD]
#   scripts/tensorboard_screenshot.sh --per-sample [OUT.png]
#
# LOGDIR defaults to demo_output/tensorboard (run `make demo` first). DASHBOARD is the part
# after '#' in TensorBoard's URL: images (default) or scalars.
# --per-sample trains a small model for three epochs (CPU, about a minute) with
# GradCAMCallback(per_sample_images=True) into a temporary folder and shoots the default
# Images tab (docs/tensorboard_per_sample.png): one card per sample, shown at actual size,
# captions legible without ticking "Show actual image size".
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
port=${PORT:-6123}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium not found: apt-get install chromium" >&2; exit 2; }

if [ "${1:-}" = "--per-sample" ]; then
    out=${2:-docs/tensorboard_per_sample.png}
    dashboard=images
    logdir=$(mktemp -d)
    PYTHONPATH=. "$python" - "$logdir" <<'EOF'
import sys
import warnings

from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from examples.shortcut_learning import SmallCNN
from gradcam_callback import GradCAMCallback
from gradcam_callback.synthetic import ShortcutShapes

warnings.filterwarnings("ignore")
seed_everything(0)
train = DataLoader(ShortcutShapes(384, image_size=64, seed=1, shortcut_prob=0.0),
                   batch_size=32, shuffle=True)
val = DataLoader(ShortcutShapes(64, image_size=64, seed=2, shortcut_prob=0.0), batch_size=32)
gradcam = GradCAMCallback("features", num_samples=4, per_sample_images=True,
                          mean=[0.5] * 3, std=[0.25] * 3)
Trainer(max_epochs=3, logger=TensorBoardLogger(sys.argv[1], name="per_sample"),
        callbacks=[gradcam], enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False).fit(SmallCNN(), train, val)
EOF
else
    logdir=${1:-demo_output/tensorboard}
    out=${2:-docs/tensorboard_images.png}
    dashboard=${3:-images}
fi
[ -d "$logdir" ] || { echo "no logs at $logdir: run 'make demo' first" >&2; exit 2; }

"$python" -m tensorboard.main --logdir "$logdir" --host 127.0.0.1 --port "$port" \
    --load_fast false --samples_per_plugin images=100 > /tmp/tensorboard_screenshot.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 120); do  # wait until the images plugin has read the logs
    if curl -sf "http://127.0.0.1:$port/data/plugin/images/tags" | grep -q gradcam; then break; fi
    sleep 0.5
done

"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --no-first-run --disable-component-update --disable-sync --hide-scrollbars \
    --user-data-dir="$(mktemp -d)" --window-size=1500,1100 --virtual-time-budget=20000 \
    --screenshot="$out" "http://127.0.0.1:$port/#$dashboard" 2>/dev/null
echo "wrote $out"
