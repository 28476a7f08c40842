"""Container configuration: TGI environment and serving.properties, checked at startup."""

from __future__ import annotations

import pytest

from streamhost.engine import EngineUnavailable, choose_engine, vllm_installed
from streamhost.server.config import ConfigError, build_config


def test_tgi_environment_sets_the_limits(tmp_path):
    config = build_config(
        model_dir=str(tmp_path),
        env={
            "HF_MODEL_ID": "tiny",
            "MAX_INPUT_LENGTH": "1900",
            "MAX_TOTAL_TOKENS": "2048",
            "MAX_CONCURRENT_REQUESTS": "7",
            "MAX_STOP_SEQUENCES": "2",
            "PAYLOAD_LIMIT": "1000",
            "SAGEMAKER_BIND_TO_PORT": "9123",
        },
    )
    assert config.api == "tgi" and config.model_id == "tiny"
    assert (config.engine.max_input_tokens, config.engine.max_total_tokens) == (1900, 2048)
    assert config.engine.max_concurrent_requests == 7 and config.engine.max_stop_sequences == 2
    assert config.payload_limit == 1000 and config.port == 9123


def test_both_input_limits_set_is_tgis_startup_error(tmp_path):
    env = {"HF_MODEL_ID": "tiny", "MAX_INPUT_TOKENS": "10", "MAX_INPUT_LENGTH": "10"}
    with pytest.raises(ConfigError, match="Both `max_input_tokens`"):
        build_config(model_dir=str(tmp_path), env=env)


def test_input_limit_must_be_below_total(tmp_path):
    env = {"HF_MODEL_ID": "tiny", "MAX_INPUT_TOKENS": "100", "MAX_TOTAL_TOKENS": "100"}
    with pytest.raises(
        ConfigError, match=r"`max_input_tokens`\(100\) must be < `max_total_tokens`\(100\)"
    ):
        build_config(model_dir=str(tmp_path), env=env)


def test_more_gpus_than_the_machine_has_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="SM_NUM_GPUS=64"):
        build_config(model_dir=str(tmp_path), env={"HF_MODEL_ID": "tiny", "SM_NUM_GPUS": "64"})


def test_one_gpu_on_a_cpu_machine_runs(tmp_path):
    config = build_config(model_dir=str(tmp_path), env={"HF_MODEL_ID": "tiny", "SM_NUM_GPUS": "1"})
    assert config.model_id == "tiny"


def test_an_unknown_quantize_value_is_refused_clearly(tmp_path):
    with pytest.raises(ConfigError, match="not a TGI quantization"):
        build_config(
            model_dir=str(tmp_path), env={"HF_MODEL_ID": "tiny", "HF_MODEL_QUANTIZE": "zip"}
        )


def test_quantize_goes_to_vllm_and_our_engine_refuses_it(tmp_path):
    config = build_config(
        model_dir=str(tmp_path),
        env={"HF_MODEL_ID": "tiny", "HF_MODEL_QUANTIZE": "gptq"},
        engine="builtin",
    )
    assert config.engine.quantization == "gptq"
    with pytest.raises(EngineUnavailable, match="'gptq' needs the vllm engine"):
        choose_engine(config.engine)


def test_no_model_anywhere_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no model to serve"):
        build_config(model_dir=str(tmp_path), env={})


def test_serving_properties_select_lmi_and_its_options(tmp_path):
    (tmp_path / "serving.properties").write_text(
        "engine=MPI\noption.model_id=tiny\noption.max_rolling_batch_size=16\n"
        "option.output_formatter=jsonlines\noption.some_future_key=1\n"
    )
    config = build_config(model_dir=str(tmp_path), env={"OPTION_MAX_ROLLING_BATCH_SIZE": "8"})
    assert config.api == "lmi" and config.model_id == "tiny"
    assert config.engine.max_batch_size == 8  # the OPTION_* environment wins
    assert config.output_formatter == "jsonlines" and config.jsonlines_format == "outputs"


def test_relative_model_id_is_relative_to_the_model_dir(tmp_path, tiny_dir):
    import shutil

    shutil.copytree(tiny_dir, tmp_path / "weights")
    (tmp_path / "serving.properties").write_text("option.model_id=weights\n")
    config = build_config(model_dir=str(tmp_path), env={})
    assert config.model_id == str(tmp_path / "weights")


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("option.max_rolling_batch_size=lots", "option.max_rolling_batch_size"),
        ("option.output_formatter=xml", "option.output_formatter"),
        ("option.dtype=int3", "option.dtype"),
        ("option.trust_remote_code=maybe", "option.trust_remote_code"),
        ("option.rolling_batch=magic", "option.rolling_batch"),
    ],
)
def test_invalid_property_values_are_fatal_and_name_the_key(tmp_path, line, key):
    (tmp_path / "serving.properties").write_text(f"option.model_id=tiny\n{line}\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_config(model_dir=str(tmp_path), env={})


def test_omp_num_threads_sets_the_cpu_threads_and_must_be_positive(tmp_path):
    env = {"HF_MODEL_ID": "tiny", "OMP_NUM_THREADS": "3"}
    assert build_config(model_dir=str(tmp_path), env=env).engine.cpu_threads == 3
    assert (
        build_config(model_dir=str(tmp_path), env={"HF_MODEL_ID": "tiny"}).engine.cpu_threads
        is None
    )
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS"):
        build_config(model_dir=str(tmp_path), env={"HF_MODEL_ID": "tiny", "OMP_NUM_THREADS": "0"})


@pytest.mark.parametrize(
    ("rolling", "engine"),
    [("vllm", "vllm"), ("auto", "auto"), ("lmi-dist", "auto"), ("scheduler", "auto")],
)
def test_rolling_batch_chooses_the_engine_as_lmi_does(tmp_path, rolling, engine):
    (tmp_path / "serving.properties").write_text(
        f"engine=Python\noption.model_id=tiny\noption.rolling_batch={rolling}\n"
        "option.tensor_parallel_degree=1\noption.max_model_len=1024\n"
        "option.gpu_memory_utilization=0.5\n"
    )
    config = build_config(model_dir=str(tmp_path), env={})
    assert config.engine.engine == engine
    assert config.engine.max_total_tokens == 1024
    assert config.engine.gpu_memory_utilization == 0.5
    # --engine wins over the container's own setting.
    assert build_config(model_dir=str(tmp_path), env={}, engine="builtin").engine.engine == (
        "builtin"
    )


def test_option_rolling_batch_env_form_asks_for_vllm(tmp_path):
    (tmp_path / "serving.properties").write_text("engine=Python\noption.model_id=tiny\n")
    config = build_config(model_dir=str(tmp_path), env={"OPTION_ROLLING_BATCH": "vllm"})
    assert config.engine.engine == "vllm"


@pytest.mark.skipif(vllm_installed(), reason="vLLM is installed in this Python")
def test_vllm_asked_for_without_vllm_is_an_error_not_a_fallback(tmp_path):
    config = build_config(model_dir=str(tmp_path), env={"HF_MODEL_ID": "tiny"}, engine="vllm")
    with pytest.raises(EngineUnavailable, match="vLLM is not installed in this Python"):
        choose_engine(config.engine)


def test_vllm_cannot_run_the_synthetic_model(tmp_path):
    config = build_config(
        model_dir=str(tmp_path), env={"HF_MODEL_ID": "synthetic:1"}, engine="vllm"
    )
    with pytest.raises(EngineUnavailable, match="use --engine builtin"):
        choose_engine(config.engine)


@pytest.mark.skipif(vllm_installed(), reason="vLLM is installed in this Python")
def test_serve_model_asked_for_vllm_without_it_says_so_in_one_line(capsys):
    from streamhost import cli

    assert cli.main(["serve-model", "--model", "tiny", "--engine", "vllm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("streamhost serve-model: the vllm engine was asked for but vLLM")


def test_vllm_container_settings_are_vllms_flags(tmp_path, caplog):
    env = {
        "SM_VLLM_MODEL": "tiny",
        "SM_VLLM_DTYPE": "half",
        "SM_VLLM_MAX_MODEL_LEN": "1024",
        "SM_VLLM_MAX_NUM_SEQS": "16",
        "SM_VLLM_TENSOR_PARALLEL_SIZE": "1",
        "SM_VLLM_GPU_MEMORY_UTILIZATION": "0.8",
        "SM_VLLM_TRUST_REMOTE_CODE": "",
        "SM_VLLM_ENABLE_PREFIX_CACHING": "",
    }
    config = build_config(model_dir=str(tmp_path), api="vllm", env=env)
    engine = config.engine
    assert (engine.engine, engine.model, engine.dtype) == ("vllm", "tiny", "float16")
    assert (engine.max_total_tokens, engine.max_batch_size) == (1024, 16)
    assert engine.gpu_memory_utilization == 0.8 and engine.trust_remote_code
    assert "SM_VLLM_ENABLE_PREFIX_CACHING is not used by streamhost; ignored" in caplog.text


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SM_VLLM_DTYPE", "fp8", "SM_VLLM_DTYPE: expected one of auto, half"),
        ("SM_VLLM_GPU_MEMORY_UTILIZATION", "2", "SM_VLLM_GPU_MEMORY_UTILIZATION: expected"),
        ("SM_VLLM_MAX_MODEL_LEN", "lots", "SM_VLLM_MAX_MODEL_LEN"),
    ],
)
def test_bad_vllm_container_settings_are_named(tmp_path, name, value, message):
    with pytest.raises(ConfigError, match=message):
        build_config(
            model_dir=str(tmp_path), api="vllm", env={"SM_VLLM_MODEL": "tiny", name: value}
        )
