"""Image URIs map to the model-server personality streamhost runs in their place."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamhost.client.images import UnsupportedImage, image_repository, personality


@pytest.mark.parametrize(
    "image",
    [
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi-inference:"
        "2.0.1-tgi0.9.3-gpu-py39-cu118-ubuntu20.04",
        "763104351884.dkr.ecr.cn-north-1.amazonaws.com.cn/huggingface-pytorch-tgi-inference:2.4",
        "ghcr.io/huggingface/text-generation-inference:2.0",
        "ghcr.io/huggingface/text-generation-inference",
    ],
)
def test_tgi_images_run_the_tgi_personality(image):
    assert personality(image) == "tgi"


@pytest.mark.parametrize(
    "image",
    [
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/vllm:0.11.2-sagemaker-v1.2",
        "public.ecr.aws/deep-learning-containers/vllm:0.11.2-gpu-py312-cu129-ubuntu22.04-sagemaker-v1.2",
        "streamhost:vllm",
    ],
)
def test_vllm_images_run_the_vllm_personality(image):
    assert personality(image) == "vllm"


@pytest.mark.parametrize(
    "image",
    [
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.23.0-deepspeed0.9.5-cu118",
        "763104351884.dkr.ecr.us-west-2.amazonaws.com/djl-inference:0.29.0-lmi11.0.0-cu124",
        "deepjavalibrary/djl-serving:0.23.0-deepspeed",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/djl-deepspeed:0.22.1",
        "localhost:5000/djl-lmi:latest",
    ],
)
def test_lmi_and_djl_images_run_the_lmi_personality(image):
    assert personality(image) == "lmi"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("streamhost", "auto"),
        ("streamhost:latest", "auto"),
        ("streamhost:tgi", "tgi"),
        ("streamhost:lmi", "lmi"),
        ("registry.example.com:5000/team/streamhost-gpu:1.2", "auto"),
    ],
)
def test_streamhost_images_choose_by_tag_or_automatically(image, expected):
    assert personality(image) == expected


@pytest.mark.parametrize(
    "image",
    [
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1-cpu-py310",
        "nginx:latest",
        "",
    ],
)
def test_other_images_are_refused_with_the_images_that_work(image):
    with pytest.raises(UnsupportedImage, match="use a TGI, LMI/DJL, vLLM or streamhost image URI"):
        personality(image)


def test_a_registry_port_is_not_mistaken_for_a_tag():
    assert image_repository("localhost:5000/djl-inference") == ("djl-inference", "")
    assert image_repository("x/y@sha256:abcdef0123") == ("y", "")


@given(st.text(max_size=300))
def test_any_string_maps_to_a_personality_or_unsupported_image(image):
    try:
        assert personality(image) in ("tgi", "lmi", "auto")
    except UnsupportedImage as error:
        assert error.image == image
