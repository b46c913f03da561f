"""The HParams table as TensorBoard itself serves it (its HTTP data API): the experiment's hyperparameters
beside each run's best and last validation loss."""

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from helpers import QUOTE, make_config, scalar_values
from tf_charrnn.config import RunConfig
from tf_charrnn.run import layout
from tf_charrnn.training import trainer
from tf_charrnn.training.summaries import HPARAM_SECTIONS


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(url, body, timeout=60):
    """POSTs JSON to a TensorBoard started moments ago, retrying until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def tensorboard(tmp_path):
    """Starts TensorBoard on tmp_path/runs; yields its base URL."""
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            f"--logdir={tmp_path / 'runs'}",
            f"--port={port}",
            "--host=127.0.0.1",
            "--load_fast=false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_the_hparams_table_shows_the_experiment_and_its_validation_loss(
    text_file, corpus_cache, tmp_path, tensorboard
):
    corpus = text_file((QUOTE + " ") * 6)
    results = {}
    for name, units in (("small", 64), ("large", 128)):
        config = make_config(
            corpus,
            corpus_cache,
            tmp_path / "runs" / name,
            batch_size=2,
            seq_length=8,
            embedding_dim=8,
            rnn_units=units,
            dropout=0.0,
            learning_rate=0.01,
            max_steps=6,
            eval_every=3,
            sample_length=0,
        )
        results[name] = trainer.train(config)

    experiment = _post(f"{tensorboard}/data/plugin/hparams/experiment", {"experimentName": ""})
    expected = {field for section in HPARAM_SECTIONS for field in RunConfig().to_dict()[section]}
    assert {info["name"] for info in experiment["hparamInfos"]} == expected
    assert not {"train_dir", "data_path", "cache_dir", "eval_every", "log_every", "strategy"} & expected
    assert {(m["name"]["group"], m["name"]["tag"]) for m in experiment["metricInfos"]} == {
        ("val", "best_loss"),
        ("val", "best_bits_per_char"),
        ("val", "loss"),
        ("val", "bits_per_char"),
    }

    columns = [{"metric": {"group": "val", "tag": tag}} for tag in ("best_loss", "loss")]
    request = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "colParams": [*columns, {"hparam": "rnn_units"}],
        "startIndex": 0,
        "sliceSize": 10,
    }
    deadline = time.monotonic() + 60
    while True:  # TensorBoard loads the runs' events in the background after it starts answering
        groups = _post(f"{tensorboard}/data/plugin/hparams/session_groups", request)["sessionGroups"]
        if (
            len(groups) == 2 and all(len(g["metricValues"]) == 4 for g in groups)
        ) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(groups) == 2
    for group in groups:
        name = "small" if group["hparams"]["rnn_units"] == 64 else "large"
        metrics = {value["name"]["tag"]: value["value"] for value in group["metricValues"]}
        logged = scalar_values(layout.log_dir(str(tmp_path / "runs" / name), "val"))["loss"]
        assert metrics["best_loss"] == pytest.approx(results[name].best_val_loss, rel=1e-6)
        assert metrics["best_loss"] == pytest.approx(min(logged), rel=1e-6)
        assert metrics["loss"] == pytest.approx(logged[-1], rel=1e-6)
