#!/usr/bin/env bash
# A screenshot of the docs site's front page, for docs/. Optional, not part of `make test`.
# Needs Debian's chromium (apt-get install chromium). Builds the site first.
#
#   scripts/site_screenshot.sh [OUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
port=${PORT:-6124}
out=${1:-docs/site_front_page.png}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium not found: apt-get install chromium" >&2; exit 2; }
NO_MKDOCS_2_WARNING=1 "$python" -m mkdocs build --strict --quiet
"$python" -m http.server "$port" --bind 127.0.0.1 --directory site > /tmp/site_screenshot.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 40); do curl -sf "http://127.0.0.1:$port/" > /dev/null && break; sleep 0.25; done
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --no-first-run --disable-component-update --disable-sync --hide-scrollbars \
    --user-data-dir="$(mktemp -d)" --window-size=1400,1000 --virtual-time-budget=10000 \
    --screenshot="$out" "http://127.0.0.1:$port/" 2>/dev/null
echo "wrote $out"
