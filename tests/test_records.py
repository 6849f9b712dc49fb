"""The recording contract the simulator and the runtime share, and the sink's running scores."""

from __future__ import annotations

import threading
import time

import torch

from quantpipe_core.models import load_model
from quantpipe_core.results import Records, WindowRecord
from quantpipe_core.runtime.report import records_to_json
from quantpipe_core.tasks import DigitsTop1, RandomImages, run_all, task_for


def test_a_snapshot_taken_while_three_threads_record_is_consistent_and_never_fails():
    records = Records()
    stop = threading.Event()

    def receiver():
        for mb in range(2_000):
            records.arrived(mb, 0, mb * 0.01)

    def compute():
        for mb in range(2_000):
            records.offered(mb, mb * 0.01, 3 if mb % 7 == 0 else None)
            records.started(mb, 0, mb * 0.01)
            records.finished(mb, 0, mb * 0.01 + 0.005)

    def sender():
        for mb in range(2_000):
            records.sent(mb, 0, 4, 100)
            if mb % 8 == 0:
                records.window(WindowRecord(0, mb // 8, mb * 0.01, None, [4] * 8, None, 0))

    snapshots = 0

    def reader():
        nonlocal snapshots
        while not stop.is_set():
            records.snapshot(records_to_json)
            snapshots += 1
            time.sleep(0.001)

    threads = [threading.Thread(target=f) for f in (receiver, compute, sender)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    watcher.join()
    final = records.snapshot(records_to_json)
    assert snapshots and len(final["t_source"]) == 2_000 and len(final["windows"]) == 250
    assert len(final["items"]) == len(range(0, 2_000, 7))


def test_the_simulator_and_the_runtime_record_through_the_same_methods():
    records = Records()
    records.offered(0, 0.0)
    records.started(0, 0, 0.0)
    records.finished(0, 0, 0.1)
    records.sent(0, 0, 4, 1234)
    records.arrived(0, 0, 0.3)
    records.started(0, 1, 0.3)
    records.finished(0, 1, 0.4)
    records.sunk(0, 0.4)
    assert records.t_source == {0: 0.0} and records.t_sink == {0: 0.4}
    assert records.link_bits == {(0, 0): 4} and records.link_bytes == {(0, 0): 1234}
    assert records.items_of(0, full=8) == 8


def test_each_task_scores_a_live_run_with_its_own_running_score():
    model = load_model("digits-vit")
    task = task_for(model, 16)
    assert isinstance(task, DigitsTop1)
    score = task.running_score()
    outputs = []
    for k, microbatch in enumerate(task.microbatches):
        with torch.no_grad():
            out = model(microbatch)
        outputs.append(out)
        score.add(k, out)
    result = score.result()
    assert result["metric"] == "top1" and result["inputs"] == len(task.labels)
    assert result["measured_accuracy"] == task.scores(torch.cat(outputs))["top1"].mean()

    images = RandomImages(load_model("vit-base"), 2, count=1).running_score()
    images.add(0, torch.zeros(2, 1000))
    assert images.result() == {"metric": None, "measured_accuracy": None, "inputs": 2}


def test_a_sentence_encoders_running_agreement_with_itself_is_one():
    model = load_model("minilm")
    task = task_for(model, 32, samples=64)
    score = task.running_score()
    for k, output in enumerate(run_all(model, task.microbatches).split(32)):
        score.add(k + len(task.microbatches), output)  # a second pass replaces the first
    assert score.result() == {"metric": "nn_agreement", "measured_accuracy": 1.0, "inputs": 64}
