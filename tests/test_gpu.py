"""GPU checks (skipped without CUDA): QLoRA and bf16 LoRA on a random-weight Gemma 3 1B through the worker."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

from garage.jobs.store import RunStore  # noqa: E402
from garage.jobs.worker import Worker  # noqa: E402
from tests.helpers import conversations, tiny_config, write_jsonl  # noqa: E402


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_random_gemma3_1b_trains_on_the_gpu(tmp_path, method):
    data = write_jsonl(tmp_path / "qa.jsonl", conversations() * 8)
    worker = Worker(RunStore(tmp_path / "runs"))
    cfg = tiny_config(str(data), model="random-gemma-3-1b", method=method, max_steps=6, learning_rate=2e-4,
                      max_seq_length=512)
    run_id = worker.submit(cfg, "gpu")
    assert worker.wait_idle(900)
    run = worker.store.get(run_id)
    status = run.status()
    assert status["state"] == "completed", run.log_tail(80)
    assert not any("QLoRA needs a GPU" in n for n in status.get("notices") or [])
    assert status["step"] == 6 and status["tokens_per_second"]
    if method == "lora":
        from safetensors import safe_open

        with safe_open(str(run.adapter_dir / "adapter_model.safetensors"), "pt") as f:
            assert len(list(f.keys())) > 0
