#!/usr/bin/env bash
# Screenshot of TensorBoard's Images dashboard, for the README. Optional, not part of
# `make test`. Run `make demo` first; needs Debian's chromium (apt-get install chromium).
#
#   scripts/tensorboard_screenshot.sh [LOGDIR] [OUT.png] [DASHBOARD]
#
# DASHBOARD is the part after '#' in TensorBoard's URL: images (default) or scalars.
set -euo pipefail
cd "$(dirname "$0")/.."
logdir=${1:-demo_output/tensorboard}
out=${2:-docs/tensorboard_images.png}
dashboard=${3:-images}
port=${PORT:-6123}
python=${PYTHON:-.venv/bin/python}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium not found: apt-get install chromium" >&2; exit 2; }
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
