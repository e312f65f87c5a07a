"""What a user does when they open the UI: a real TensorBoard server, fetched over HTTP."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import warnings

import pytest
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gradcam_callback import GradCAMCallback
from tests.lit_helpers import LitTiny, StripeData

TAG = "gradcam/features/overlay"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(base: str, path: str) -> bytes:
    with urllib.request.urlopen(base + path, timeout=10) as response:
        return response.read()


@pytest.mark.slow
def test_tensorboard_serves_the_logged_grid(tmp_path):
    seed_everything(0)
    logger = TensorBoardLogger(tmp_path, name="run", version=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(max_epochs=2, logger=logger, callbacks=[GradCAMCallback("features")],
                enable_progress_bar=False, enable_model_summary=False,
                enable_checkpointing=False).fit(LitTiny(), StripeData())
    logged = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    logged.Reload()
    last = logged.Images(TAG)[-1]

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "tensorboard.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path), "--host",
         "127.0.0.1", "--port", str(port), "--load_fast", "false", "--reload_interval", "1"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        tags: dict = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                tags = json.loads(get(base, "/data/plugin/images/tags"))
                if any(TAG in run_tags for run_tags in tags.values()):
                    break
            except OSError:
                pass  # not listening yet
            time.sleep(0.5)
        run = next(name for name, run_tags in tags.items() if TAG in run_tags)
        assert tags[run][TAG]["samples"] == 1
        query = urllib.parse.urlencode({"run": run, "tag": TAG, "sample": 0})
        entries = json.loads(get(base, f"/data/plugin/images/images?{query}"))
        assert [e["step"] for e in entries] == [e.step for e in logged.Images(TAG)]
        blob = get(base, "/data/plugin/images/individualImage?" + entries[-1]["query"])
        with Image.open(io.BytesIO(blob)) as picture:
            assert picture.size == (last.width, last.height)
            picture.load()  # decodes fully
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
