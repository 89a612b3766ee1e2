"""The model catalogue: ids, sizes, memory estimates, templates, gated-model help."""

from garage import catalog


def test_catalogue_covers_the_gemma_families():
    names = set(catalog.CATALOG)
    for size in ("270m", "1b", "4b", "12b", "27b"):
        assert f"gemma-3-{size}-it" in names and f"gemma-3-{size}-pt" in names
    assert {"gemma-3n-E2B-it", "gemma-3n-E4B-it", "gemma-2-2b-it", "tiny-gemma-3"} <= names
    assert any(n.startswith("gemma-4-") for n in names)


def test_memory_estimates_order_methods_and_sizes():
    small, big = catalog.CATALOG["gemma-3-1b-it"], catalog.CATALOG["gemma-3-27b-it"]
    for info in (small, big):
        assert info.memory_gb("qlora") < info.memory_gb("lora") < info.memory_gb("full")
    assert small.memory_gb("lora") < big.memory_gb("lora")


def test_any_hub_id_or_folder_is_accepted(tmp_path):
    other = catalog.resolve("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert other.hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct" and other.family == "other"
    assert abs(other.params_b - 0.135) < 1e-6
    assert catalog.resolve(str(tmp_path)).hub_id == str(tmp_path)
    assert catalog.resolve("unsloth/gemma-3-1b-it").name == "gemma-3-1b-it"


def test_gated_models_explain_and_offer_a_mirror():
    text = catalog.gated_help("gemma-3-4b-it")
    assert "accept the Gemma licence" in text and "unsloth/gemma-3-4b-it" in text


def test_presets_are_valid_configs():
    from garage.config import TrainConfig
    from garage.train.presets import size_preset

    for info in catalog.CATALOG.values():
        TrainConfig.from_dict({"model": info.name, "dataset": "x", **size_preset(info.name)})
