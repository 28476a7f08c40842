"""Model-server configuration, parsed once at startup as the real containers do.

The TGI personality reads the TGI container's environment (``HF_MODEL_ID``,
``MAX_TOTAL_TOKENS``, ...); the LMI personality reads ``serving.properties`` in the model
folder with ``OPTION_*`` environment overrides. Both end in one typed :class:`ServerConfig`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from streamhost.engine import EngineConfig

log = logging.getLogger("streamhost.server")

DEFAULT_MODEL_DIR = "/opt/ml/model"
QUANTIZE_VALUES = (
    "awq",
    "compressed-tensors",
    "eetq",
    "exl2",
    "gptq",
    "marlin",
    "bitsandbytes",
    "bitsandbytes-nf4",
    "bitsandbytes-fp4",
    "fp8",
)
LMI_FORMATTERS = ("jsonlines", "json", "sse", "tgi_compat", "none")
LMI_KNOWN_KEYS = {
    "engine",
    "option.model_id",
    "option.revision",
    "option.tensor_parallel_degree",
    "option.max_rolling_batch_size",
    "option.rolling_batch",
    "option.output_formatter",
    "option.jsonlines_format",
    "option.enable_streaming",
    "option.trust_remote_code",
    "option.dtype",
    "option.max_input_len",
    "option.max_total_tokens",
    "option.max_rolling_batch_prefill_tokens",
    "option.entryPoint",
    "option.paged_attention",
    "option.tgi_compat",
    "option.enable_stateful_sessions",
    "option.sessions_expiration",
    # Passed to vLLM when it is the engine.
    "option.max_model_len",
    "option.quantize",
    "option.gpu_memory_utilization",
}
# LMI's option.rolling_batch: vllm asks for vLLM; the backends LMI removed (lmi-dist,
# scheduler) and the rest mean "the best engine here".
ROLLING_BATCH_ENGINES = {
    "vllm": "vllm",
    "auto": "auto",
    "scheduler": "auto",
    "lmi-dist": "auto",
    "disable": "auto",
    "deepspeed": "auto",
    "trtllm": "auto",
}
LMI_DTYPES = {"fp16": "float16", "fp32": "float32", "bf16": "bfloat16", "auto": "auto"}
# AWS's vLLM container turns each SM_VLLM_<NAME> variable into vLLM's --<name> flag; these
# are the flags streamhost honours (the others are logged and ignored).
VLLM_ENV_PREFIX = "SM_VLLM_"
VLLM_FLAGS = {
    "model",
    "revision",
    "trust-remote-code",
    "dtype",
    "max-model-len",
    "max-num-seqs",
    "max-num-batched-tokens",
    "tensor-parallel-size",
    "quantization",
    "gpu-memory-utilization",
}
VLLM_DTYPES = {
    "auto": "auto",
    "half": "float16",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "float": "float32",
    "float32": "float32",
}


class ConfigError(Exception):
    """A configuration that cannot start; the message names the setting."""


class TGIEnvironment(BaseModel):
    """The TGI container's environment variables (and TGI launcher names).

    Validated from an explicit mapping (``os.environ`` by default) so tests and the
    gateway's provisioner can pass an environment without touching the process's own.
    """

    model_config = ConfigDict(extra="ignore")

    hf_model_id: str | None = Field(None, validation_alias=AliasChoices("HF_MODEL_ID", "MODEL_ID"))
    hf_model_revision: str | None = Field(
        None, validation_alias=AliasChoices("HF_MODEL_REVISION", "REVISION")
    )
    sm_num_gpus: int | None = Field(None, validation_alias=AliasChoices("SM_NUM_GPUS", "NUM_SHARD"))
    max_input_tokens: int | None = Field(None, validation_alias="MAX_INPUT_TOKENS")
    max_input_length: int | None = Field(None, validation_alias="MAX_INPUT_LENGTH")
    max_total_tokens: int | None = Field(None, validation_alias="MAX_TOTAL_TOKENS")
    max_batch_prefill_tokens: int | None = Field(None, validation_alias="MAX_BATCH_PREFILL_TOKENS")
    max_batch_size: int | None = Field(None, validation_alias="MAX_BATCH_SIZE")
    max_concurrent_requests: int = Field(128, validation_alias="MAX_CONCURRENT_REQUESTS")
    max_stop_sequences: int = Field(4, validation_alias="MAX_STOP_SEQUENCES")
    max_top_n_tokens: int = Field(5, validation_alias="MAX_TOP_N_TOKENS")
    quantize: str | None = Field(
        None, validation_alias=AliasChoices("HF_MODEL_QUANTIZE", "QUANTIZE")
    )
    trust_remote_code: bool = Field(
        False, validation_alias=AliasChoices("HF_MODEL_TRUST_REMOTE_CODE", "TRUST_REMOTE_CODE")
    )
    dtype: str | None = Field(None, validation_alias="DTYPE")
    payload_limit: int = Field(2_000_000, validation_alias="PAYLOAD_LIMIT")
    api_key: str | None = Field(None, validation_alias="API_KEY")
    port: int | None = Field(None, validation_alias="SAGEMAKER_BIND_TO_PORT")
    graceful_termination_timeout: float = Field(
        30.0, validation_alias="GRACEFUL_TERMINATION_TIMEOUT"
    )
    # torch's threads for a CPU model (the variable OpenMP and torch themselves read).
    omp_num_threads: int | None = Field(None, ge=1, validation_alias="OMP_NUM_THREADS")


@dataclass
class ServerConfig:
    """Everything the model server needs, validated."""

    api: str = "tgi"
    host: str = "127.0.0.1"
    port: int = 8080
    model_dir: Path = Path(DEFAULT_MODEL_DIR)
    engine: EngineConfig = field(default_factory=EngineConfig)
    payload_limit: int = 2_000_000
    api_key: str | None = None
    instance_secret: str | None = None
    # LMI personality.
    output_formatter: str = "jsonlines"
    jsonlines_format: str = "outputs"
    lmi_default_max_new_tokens: int = 30
    entry_point: Path | None = None
    install_requirements: bool = True
    # Stateful sessions (the container side of SageMaker's sticky routing).
    sessions_enabled: bool = True
    session_ttl: float = 20 * 60
    keepalive_interval: float = 15.0
    # Run the model in a child process so forward passes and HTTP do not share one GIL.
    engine_process: bool = True
    graceful_timeout: float = 30.0
    request_timeout: float = 60.0  # for a client to send a request whole (408 past it)
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        """The model the engine loads."""
        return self.engine.model


def read_properties(path: Path) -> dict[str, str]:
    """Parse a Java-style ``serving.properties`` file (``key=value``, ``#`` comments)."""
    props: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        sep = min((i for i in (line.find("="), line.find(":")) if i > 0), default=-1)
        if sep < 0:
            raise ConfigError(f"{path}:{number}: expected key=value, got {line!r}")
        props[line[:sep].strip()] = line[sep + 1 :].strip()
    return props


def _option_env(env: Mapping[str, str]) -> dict[str, str]:
    # OPTION_MAX_ROLLING_BATCH_SIZE -> option.max_rolling_batch_size (LMI's env form).
    out = {}
    for key, value in env.items():
        if key.startswith("OPTION_"):
            name = key[len("OPTION_") :].lower()
            out["option.entryPoint" if name == "entrypoint" else f"option.{name}"] = value
        elif key == "SERVING_ENGINE":
            out["engine"] = value
    return out


def _bool(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def _int(key: str, value: str, minimum: int = 1) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{key}: must be >= {minimum}, got {number}")
    return number


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def build_config(
    *,
    model_dir: str | None = None,
    model: str | None = None,
    api: str = "auto",
    engine: str | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    request_timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Resolve the server's configuration from CLI flags, the environment and the model dir.

    ``engine`` (``--engine``) overrides what the container's own settings ask for (LMI's
    ``option.rolling_batch``); ``None`` leaves them to decide.
    """
    env = dict(os.environ if env is None else env)
    if request_timeout <= 0:
        raise ConfigError(f"--request-timeout must be positive, got {request_timeout:g}")
    folder = Path(model_dir or DEFAULT_MODEL_DIR)
    properties_file = folder / "serving.properties"
    if api == "auto":
        api = "lmi" if properties_file.exists() else "tgi"
    if api not in ("tgi", "lmi", "vllm"):
        raise ConfigError(f"--api must be auto, tgi, lmi or vllm; got {api!r}")
    try:
        tgi = TGIEnvironment.model_validate(env)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(
            f"{first['loc'][0] if first['loc'] else 'environment'}: {first['msg']}"
        ) from None
    config = ServerConfig(api=api, host=host, model_dir=folder)
    config.port = port or tgi.port or 8080
    config.payload_limit = tgi.payload_limit
    config.graceful_timeout = tgi.graceful_termination_timeout
    config.request_timeout = request_timeout
    config.api_key = tgi.api_key
    config.instance_secret = env.get("STREAMHOST_INSTANCE_SECRET") or None
    engine_config = config.engine
    engine_config.cpu_threads = tgi.omp_num_threads
    if api == "tgi":
        _apply_tgi(tgi, engine_config, folder, model)
    elif api == "vllm":
        _apply_vllm(env, engine_config, folder, model)
    else:
        props = read_properties(properties_file) if properties_file.exists() else {}
        props.update(_option_env(env))
        config.properties = props
        _apply_lmi(props, config, folder, model)
    if tgi.sm_num_gpus is not None and tgi.sm_num_gpus > 1:
        if _gpu_count() < tgi.sm_num_gpus:
            raise ConfigError(
                f"SM_NUM_GPUS={tgi.sm_num_gpus} but this machine has {_gpu_count()} GPU(s): "
                "set SM_NUM_GPUS to at most the number of GPUs"
            )
        engine_config.tensor_parallel_size = tgi.sm_num_gpus
    if tgi.quantize:
        if tgi.quantize not in QUANTIZE_VALUES:
            raise ConfigError(
                f"HF_MODEL_QUANTIZE={tgi.quantize!r} is not a TGI quantization method "
                f"(one of {', '.join(QUANTIZE_VALUES)})"
            )
        engine_config.quantization = tgi.quantize  # only vLLM serves it: see choose_engine
    if engine is not None:
        engine_config.engine = engine
    try:
        engine_config.check()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return config


def _apply_tgi(tgi: TGIEnvironment, engine: EngineConfig, folder: Path, model: str | None) -> None:
    if tgi.max_input_tokens is not None and tgi.max_input_length is not None:
        raise ConfigError(
            f"Both `max_input_tokens` ({tgi.max_input_tokens}) and `max_input_length` "
            f"({tgi.max_input_length}) are set. Please define only `max_input_tokens` as "
            "`max_input_length is deprecated for naming consistency."
        )
    engine.model = model or tgi.hf_model_id or _folder_model(folder)
    engine.revision = tgi.hf_model_revision
    engine.trust_remote_code = tgi.trust_remote_code
    if tgi.dtype:
        engine.dtype = tgi.dtype
    engine.max_input_tokens = tgi.max_input_tokens or tgi.max_input_length
    engine.max_total_tokens = tgi.max_total_tokens
    if tgi.max_batch_prefill_tokens is not None:
        engine.max_batch_prefill_tokens = tgi.max_batch_prefill_tokens
    if tgi.max_batch_size is not None:
        engine.max_batch_size = tgi.max_batch_size
    engine.max_concurrent_requests = tgi.max_concurrent_requests
    engine.max_stop_sequences = tgi.max_stop_sequences
    engine.max_top_n_tokens = tgi.max_top_n_tokens
    if engine.max_input_tokens is not None and engine.max_total_tokens is not None:
        if engine.max_input_tokens >= engine.max_total_tokens:
            raise ConfigError(
                f"`max_input_tokens`({engine.max_input_tokens}) must be < "
                f"`max_total_tokens`({engine.max_total_tokens})"
            )


def _apply_vllm(
    env: Mapping[str, str], engine: EngineConfig, folder: Path, model: str | None
) -> None:
    """AWS's vLLM container: each ``SM_VLLM_<NAME>`` variable is vLLM's ``--<name>`` flag."""
    settings = {
        key[len(VLLM_ENV_PREFIX) :].lower().replace("_", "-"): value
        for key, value in env.items()
        if key.startswith(VLLM_ENV_PREFIX)
    }
    for name in settings:
        if name not in VLLM_FLAGS:
            log.warning("%s%s is not used by streamhost; ignored", VLLM_ENV_PREFIX, _env(name))
    engine.engine = "vllm"  # the image's engine: without vLLM it fails, as the image would
    engine.model = model or settings.get("model") or _folder_model(folder)
    engine.revision = settings.get("revision") or None
    if "trust-remote-code" in settings:  # a flag: set with no value means on
        value = settings["trust-remote-code"] or "true"
        engine.trust_remote_code = _bool("SM_VLLM_TRUST_REMOTE_CODE", value)
    if "dtype" in settings:
        value = settings["dtype"].strip().lower()
        if value not in VLLM_DTYPES:
            raise ConfigError(
                f"SM_VLLM_DTYPE: expected one of {', '.join(VLLM_DTYPES)}; got {value!r}"
            )
        engine.dtype = VLLM_DTYPES[value]
    for name, field_name in (
        ("max-model-len", "max_total_tokens"),
        ("max-num-seqs", "max_batch_size"),
        ("max-num-batched-tokens", "max_batch_prefill_tokens"),
        ("tensor-parallel-size", "tensor_parallel_size"),
    ):
        if name in settings:
            setattr(engine, field_name, _int(VLLM_ENV_PREFIX + _env(name), settings[name]))
    if settings.get("quantization"):
        engine.quantization = settings["quantization"]
    if "gpu-memory-utilization" in settings:
        engine.gpu_memory_utilization = _fraction(
            VLLM_ENV_PREFIX + "GPU_MEMORY_UTILIZATION", settings["gpu-memory-utilization"]
        )


def _env(flag: str) -> str:
    return flag.upper().replace("-", "_")


def _fraction(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number <= 1:
        raise ConfigError(f"{key}: expected a number in (0, 1]; got {value!r}")
    return number


def _folder_model(folder: Path) -> str:
    if (folder / "config.json").exists():
        return str(folder)
    raise ConfigError(
        f"no model to serve: set HF_MODEL_ID, pass --model, or put a model in {folder}"
    )


def _apply_lmi(
    props: dict[str, str], config: ServerConfig, folder: Path, model: str | None
) -> None:
    for key in props:
        if key not in LMI_KNOWN_KEYS:
            log.warning("serving.properties: %s is not used by streamhost; ignored", key)
    engine = config.engine
    model_id = model or props.get("option.model_id")
    entry = props.get("option.entryPoint")
    if entry and entry not in ("djl_python.huggingface", "djl_python.transformers_neuronx"):
        path = folder / entry if not Path(entry).is_absolute() else Path(entry)
        if path.suffix != ".py":
            path = path.with_suffix(".py")
        if not path.exists():
            raise ConfigError(f"option.entryPoint: {path} does not exist")
        config.entry_point = path
    elif (folder / "model.py").exists():
        config.entry_point = folder / "model.py"
    if model_id is None:
        if config.entry_point is not None:
            model_id = ""
        else:
            model_id = _folder_model(folder)
    elif model_id and not model_id.startswith(("synthetic:", "s3://")) and model_id != "tiny":
        # A relative folder is relative to the model directory, as in the container.
        candidate = folder / model_id
        if candidate.is_dir() or model_id.startswith(("./", "../")):
            model_id = str(candidate)  # a missing one is then named in full
    engine.model = model_id
    engine.revision = props.get("option.revision")
    if "option.trust_remote_code" in props:
        engine.trust_remote_code = _bool(
            "option.trust_remote_code", props["option.trust_remote_code"]
        )
    if "option.dtype" in props:
        value = props["option.dtype"].strip().lower()
        if value not in LMI_DTYPES:
            raise ConfigError(
                f"option.dtype: expected one of fp16, bf16, fp32, auto; got {value!r}"
            )
        engine.dtype = LMI_DTYPES[value]
    if "option.tensor_parallel_degree" in props:
        value = props["option.tensor_parallel_degree"]
        degree = (
            _gpu_count() or 1 if value == "max" else _int("option.tensor_parallel_degree", value)
        )
        if degree > 1 and _gpu_count() < degree:
            raise ConfigError(
                f"option.tensor_parallel_degree={degree} but this machine has {_gpu_count()} GPU(s)"
            )
        engine.tensor_parallel_size = degree
    if "option.max_rolling_batch_size" in props:
        engine.max_batch_size = _int(
            "option.max_rolling_batch_size", props["option.max_rolling_batch_size"]
        )
    if "option.max_input_len" in props:
        engine.max_input_tokens = _int("option.max_input_len", props["option.max_input_len"])
    if "option.max_total_tokens" in props:
        engine.max_total_tokens = _int("option.max_total_tokens", props["option.max_total_tokens"])
    if "option.max_rolling_batch_prefill_tokens" in props:
        engine.max_batch_prefill_tokens = _int(
            "option.max_rolling_batch_prefill_tokens",
            props["option.max_rolling_batch_prefill_tokens"],
        )
    if "option.max_model_len" in props:
        engine.max_total_tokens = _int("option.max_model_len", props["option.max_model_len"])
    if props.get("option.quantize"):
        engine.quantization = props["option.quantize"].strip()
    if "option.gpu_memory_utilization" in props:
        engine.gpu_memory_utilization = _fraction(
            "option.gpu_memory_utilization", props["option.gpu_memory_utilization"]
        )
    rolling = props.get("option.rolling_batch", "auto").strip().lower()
    if rolling not in ROLLING_BATCH_ENGINES:
        raise ConfigError(
            f"option.rolling_batch: unknown value {rolling!r} (vllm, auto, lmi-dist or scheduler)"
        )
    engine.engine = ROLLING_BATCH_ENGINES[rolling]
    formatter = props.get("option.output_formatter", "").strip()
    tgi_compat = _bool("option.tgi_compat", props.get("option.tgi_compat", "false"))
    if tgi_compat and not formatter:
        formatter = "tgi_compat"
    if formatter and formatter not in LMI_FORMATTERS:
        raise ConfigError(
            f"option.output_formatter: expected one of {', '.join(LMI_FORMATTERS)}; got {formatter!r}"
        )
    config.output_formatter = formatter or "json"
    jsonlines_format = props.get("option.jsonlines_format", "outputs").strip()
    if jsonlines_format not in ("outputs", "token"):
        raise ConfigError(
            f"option.jsonlines_format: expected outputs (LMI 0.23) or token (LMI 0.26+); "
            f"got {jsonlines_format!r}"
        )
    config.jsonlines_format = jsonlines_format
    if "option.enable_streaming" in props:
        value = props["option.enable_streaming"].lower()
        if value not in ("true", "false", "huggingface"):
            raise ConfigError(
                f"option.enable_streaming: expected true, false or huggingface; got {value!r}"
            )
    if "option.enable_stateful_sessions" in props:
        config.sessions_enabled = _bool(
            "option.enable_stateful_sessions", props["option.enable_stateful_sessions"]
        )
    if "option.sessions_expiration" in props:
        config.session_ttl = float(
            _int("option.sessions_expiration", props["option.sessions_expiration"])
        )
