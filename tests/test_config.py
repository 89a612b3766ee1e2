"""TrainConfig: one source of truth for the form, the YAML and the CLI."""

import pytest

from garage.config import TrainConfig, field_specs
from garage.errors import GarageError


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig(dataset="qa", learning_rate=1e-4, target_modules=["q_proj", "v_proj"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    assert TrainConfig.from_yaml(path) == cfg


def test_every_field_has_help_and_form_hints():
    specs = field_specs()
    names = {s["name"] for s in specs}
    for required in ("model", "dataset", "method", "max_seq_length", "num_train_epochs", "max_steps",
                     "learning_rate", "lr_scheduler_type", "warmup_ratio", "per_device_train_batch_size",
                     "gradient_accumulation_steps", "lora_r", "lora_alpha", "lora_dropout", "target_modules",
                     "train_on_responses_only", "packing", "eval_fraction", "eval_steps", "save_steps", "seed",
                     "gradient_checkpointing"):
        assert required in names
    assert all(s["help"] for s in specs)


def test_form_values_are_coerced():
    cfg = TrainConfig.from_dict({"dataset": "qa", "lora_r": 8.0, "packing": "true",
                                 "target_modules": "q_proj, k_proj"})
    assert cfg.lora_r == 8 and cfg.packing is True and cfg.target_modules == ["q_proj", "k_proj"]


@pytest.mark.parametrize("values, message", [
    ({"dataset": "qa", "method": "dora"}, "method must be one of lora, qlora, full"),
    ({"dataset": "qa", "learning_rate": -1}, "learning_rate must be between"),
    ({"dataset": ""}, "Choose a dataset"),
    ({"dataset": "qa", "bogus": 1}, "Unknown config field(s): bogus"),
    ({"dataset": "qa", "lora_r": "many"}, "lora_r must be a whole number; got 'many'"),
    ({"dataset": "qa", "learning_rate": 0}, "learning_rate must be between 1e-09 and 1.0; got 0.0"),
])
def test_bad_values_name_the_field(values, message):
    with pytest.raises(GarageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig.from_dict(values)


def test_bad_yaml_is_explained(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: [unclosed")
    with pytest.raises(GarageError, match="not valid YAML"):
        TrainConfig.from_yaml(path)
    with pytest.raises(GarageError, match="not found"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")


def test_every_field_is_labelled_in_a_persons_words_and_keeps_its_key():
    from garage.config import LABELS, SECTION_TITLES, SECTIONS
    from garage.ui.forms import describe

    specs = field_specs(TrainConfig)
    assert set(LABELS) == {spec["name"] for spec in specs}  # one label a field: none missing, none left over
    assert len({label for label, _ in LABELS.values()}) == len(LABELS)  # no two fields read alike
    assert set(SECTIONS.values()) <= set(SECTION_TITLES)
    assert all(spec["section"] for spec in specs if spec["group"] == "basic" and spec["name"] not in ("model",
                                                                                                      "dataset"))
    steps = next(spec for spec in specs if spec["name"] == "per_device_train_batch_size")
    assert steps["label"] == "Conversations per pass on one GPU"
    assert describe(steps).endswith("(rows; 1 to 512) · key: per_device_train_batch_size")
