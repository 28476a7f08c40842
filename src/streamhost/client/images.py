"""Which model-server personality a container image URI asks for.

SageMaker runs whatever image a model names; streamhost runs its own model server instead
and picks the API the image would have spoken: the Hugging Face TGI containers → `tgi`,
the LMI / DJL Serving containers → `lmi`, AWS's vLLM containers for SageMaker (`…/vllm:…`,
configured by `SM_VLLM_*` variables, OpenAI bodies on `/invocations`) → `vllm`,
streamhost's own image names → `auto` (the model
server then chooses as the real containers do: `lmi` when `serving.properties` exists).
Any other image cannot be emulated, and saying so at CreateModel beats a failed endpoint.

The gateway reads it to choose what to run, a client to know which request body an
endpoint expects; it lives here, in the package that depends on nothing else of ours, so
that both use this one mapping.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["Personality", "UnsupportedImage", "image_repository", "personality"]

Personality = Literal["tgi", "lmi", "vllm", "auto"]

# Repository names (the last path segment, before the tag) of the images streamhost stands
# in for; prefixes also cover Neuron and future variants of the same containers.
_TGI_REPOSITORIES = ("huggingface-pytorch-tgi-inference", "text-generation-inference")
_TGI_PREFIXES = ("huggingface-pytorch-tgi", "huggingface-tgi", "tgi-")
_LMI_PREFIXES = ("djl-",)  # djl-inference, djl-deepspeed, djl-lmi, djl-serving, ...
_VLLM_REPOSITORIES = ("vllm",)  # AWS's deep-learning container: vllm:0.11.2-…-sagemaker…
_OWN_PREFIX = "streamhost"
_OWN_TAGS: dict[str, Personality] = {"tgi": "tgi", "lmi": "lmi", "vllm": "vllm"}
_DIGEST = re.compile(r"@[A-Za-z0-9_+.-]+:[0-9a-fA-F]+$")


class UnsupportedImage(ValueError):
    """An image streamhost cannot stand in for; the message tells the user what to use."""

    def __init__(self, image: str) -> None:
        super().__init__(
            f"Container image {image} cannot be run by streamhost: use a TGI, LMI/DJL, vLLM or "
            "streamhost image URI (e.g. 763104351884.dkr.ecr.us-east-1.amazonaws.com/"
            "djl-inference:0.23.0-deepspeed0.9.5-cu118, ghcr.io/huggingface/"
            "text-generation-inference:2.0, or streamhost)."
        )
        self.image = image


def image_repository(image: str) -> tuple[str, str]:
    """(repository name, tag) of an image URI; the tag is `""` when absent.

    `763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.23.0-deepspeed` →
    `("djl-inference", "0.23.0-deepspeed")`; a registry port (`host:5000/x`) is not a tag.
    """
    reference = _DIGEST.sub("", image.strip())
    name, _, tag = reference.rpartition("/")[2].partition(":")
    return name.lower(), tag


def personality(image: str) -> Personality:
    """The API personality for `image`; `UnsupportedImage` if streamhost cannot run it."""
    name, tag = image_repository(image)
    if name.startswith(_OWN_PREFIX):
        return _OWN_TAGS.get(tag.lower(), "auto")
    if name in _TGI_REPOSITORIES or name.startswith(_TGI_PREFIXES):
        return "tgi"
    if name.startswith(_LMI_PREFIXES):
        return "lmi"
    if name in _VLLM_REPOSITORIES:
        return "vllm"
    raise UnsupportedImage(image)
