"""Input validation against botocore's sagemaker service model."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamhost.gateway.control import OPERATIONS, ControlPlane
from streamhost.gateway.errors import AwsError
from streamhost.gateway.store import Store
from streamhost.gateway.validation import java_pattern, sagemaker_model, validate_input
from tests.harness import examples

NAME_PATTERN = "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"


def rejection(operation: str, params: Any) -> AwsError:
    with pytest.raises(AwsError) as info:
        validate_input(operation, params)
    return info.value


def test_a_valid_request_comes_back_normalized():
    out = validate_input(
        "ListEndpoints",
        {"MaxResults": 5, "CreationTimeAfter": "2024-01-01T00:00:00Z", "Unknown": {"x": 1}},
    )
    assert out == {"MaxResults": 5, "CreationTimeAfter": 1704067200.0}


def test_pattern_failure_reads_like_aws():
    error = rejection("DescribeEndpoint", {"EndpointName": "my_endpoint"})
    assert error.code == "ValidationException"
    assert error.status == 400
    assert error.message == (
        "1 validation error detected: Value 'my_endpoint' at 'endpointName' failed to "
        f"satisfy constraint: Member must satisfy regular expression pattern: {NAME_PATTERN}"
    )


def test_missing_required_member_is_null():
    error = rejection("DescribeEndpoint", {"EndpointName": None})
    assert error.message == (
        "1 validation error detected: Value null at 'endpointName' failed to satisfy "
        "constraint: Member must not be null"
    )


def test_errors_are_counted_and_joined_with_semicolons():
    error = rejection("CreateEndpoint", {"EndpointName": "x" * 64})
    assert error.message.startswith("3 validation errors detected: ")
    parts = error.message.removeprefix("3 validation errors detected: ").split("; ")
    assert parts == [
        f"Value '{'x' * 64}' at 'endpointName' failed to satisfy constraint: "
        "Member must have length less than or equal to 63",
        f"Value '{'x' * 64}' at 'endpointName' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {NAME_PATTERN}",
        "Value null at 'endpointConfigName' failed to satisfy constraint: Member must not be null",
    ]


def test_list_members_are_numbered_from_one():
    variants = [
        {"VariantName": "a", "InstanceType": "ml.g5.2xlarge", "InitialInstanceCount": 1},
        {"VariantName": "b", "InstanceType": "ml.nope", "InitialInstanceCount": 0},
    ]
    error = rejection(
        "CreateEndpointConfig", {"EndpointConfigName": "c", "ProductionVariants": variants}
    )
    assert error.message.startswith("2 validation errors detected: ")
    assert (
        "Value '0' at 'productionVariants.2.member.initialInstanceCount' failed to satisfy "
        "constraint: Member must have value greater than or equal to 1" in error.message
    )
    assert (
        "Value 'ml.nope' at 'productionVariants.2.member.instanceType' failed to satisfy "
        "constraint: Member must satisfy enum value set: [ml.t2.medium, " in error.message
    )


def test_list_size_is_checked():
    error = rejection("CreateEndpointConfig", {"EndpointConfigName": "c", "ProductionVariants": []})
    assert error.message == (
        "1 validation error detected: Value '[]' at 'productionVariants' failed to satisfy "
        "constraint: Member must have length greater than or equal to 1"
    )


def test_map_values_are_checked_as_a_whole():
    container = {"Image": "img", "Environment": {"KEY": "v" * 1025}}
    error = rejection("CreateModel", {"ModelName": "m", "PrimaryContainer": container})
    assert "at 'primaryContainer.environment' failed to satisfy constraint: " in error.message
    assert (
        "Map value must satisfy constraint: [Member must have length less than or equal to 1024"
        in error.message
    )
    assert error.message.count("validation error") == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"EndpointName": 7}, "NUMBER_VALUE can not be converted to a String"),
        ({"EndpointName": True}, "TRUE_VALUE can not be converted to a String"),
        ({"EndpointName": ["a"]}, "Start of list found where not expected"),
        ({"EndpointName": {"a": 1}}, "Start of structure or map found where not expected."),
    ],
)
def test_wrong_json_types_are_serialization_errors(params: dict, message: str):
    error = rejection("DescribeEndpoint", params)
    assert (error.code, error.message) == ("SerializationException", message)


def test_numbers_must_fit_their_type():
    assert rejection("ListEndpoints", {"MaxResults": 1.5}).code == "SerializationException"
    assert rejection("ListEndpoints", {"MaxResults": 2**40}).code == "SerializationException"
    assert rejection("ListEndpoints", {"MaxResults": "5"}).code == "SerializationException"
    assert rejection("ListEndpoints", {"MaxResults": 101}).code == "ValidationException"
    assert validate_input("ListEndpoints", {"MaxResults": 5.0}) == {"MaxResults": 5}


def test_top_level_must_be_an_object():
    assert rejection("ListEndpoints", [1]).code == "SerializationException"
    assert rejection("ListEndpoints", "x").code == "SerializationException"


def test_unknown_operation_is_reported():
    assert rejection("NoSuchOperation", {}).code == "UnknownOperationException"


def test_unicode_property_classes_accept_letters_in_any_script():
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model/m"
    tags = [{"Key": "équipe été", "Value": "数据-1"}]
    assert validate_input("AddTags", {"ResourceArn": arn, "Tags": tags})["Tags"] == tags
    error = rejection("AddTags", {"ResourceArn": arn, "Tags": [{"Key": "a#b", "Value": ""}]})
    assert "at 'tags.1.member.key'" in error.message


def test_every_pattern_in_the_model_compiles_or_fails_open():
    model = sagemaker_model()
    patterns = {model.shape_for(n).metadata.get("pattern") for n in model.shape_names} - {None}
    compiled = {p: java_pattern(p) for p in patterns}
    assert sum(c is not None for c in compiled.values()) == len(patterns)


def test_java_only_constructs_translate_or_fail_open():
    assert java_pattern(r"\p{Alnum}+").fullmatch("abc9")
    assert java_pattern(r"[\u0020-\uD7FF\uE000-\uFFFD\uD800\uDC00-\uDBFF\uDFFF]*").fullmatch("a😀")
    assert java_pattern(r"\Qa.b\E").fullmatch("a.b")
    assert java_pattern(r"a\z").fullmatch("a")
    assert java_pattern(r"x${1,5}").fullmatch("x")
    assert java_pattern(r"[a-z&&[^b]]") is None
    assert java_pattern(r"\P{L}") is None
    assert java_pattern(r"\p{IsHan}") is None
    assert java_pattern("(") is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=70),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def _member_names() -> list[str]:
    model = sagemaker_model()
    names: set[str] = set()
    for operation in OPERATIONS:
        shape = model.operation_model(operation).input_shape
        stack = [shape] if shape is not None else []
        seen: set[str] = set()
        while stack:
            shape = stack.pop()
            if shape.name in seen:
                continue
            seen.add(shape.name)
            if shape.type_name == "structure":
                names.update(shape.members)
                stack.extend(shape.members.values())
            elif shape.type_name == "list":
                stack.append(shape.member)
            elif shape.type_name == "map":
                stack.append(shape.value)
    return sorted(names)


MEMBER_NAMES = _member_names()
# Objects whose keys are real member names reach deep into the shapes.
shaped_values = st.recursive(
    json_values,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(MEMBER_NAMES), children, max_size=6)
    ),
    max_leaves=30,
)


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operation=st.sampled_from(sorted(OPERATIONS)), params=shaped_values)
def test_any_json_input_raises_only_aws_errors(operation: str, params: Any):
    try:
        validate_input(operation, params)
    except AwsError as error:
        assert error.code in {"ValidationException", "SerializationException"}
        assert error.status == 400


class _NoDeployer:
    async def deploy(self, endpoint_name: str, config: dict, models: dict) -> None:
        return None

    async def undeploy(self, endpoint_name: str) -> None:
        return None

    async def scale(self, endpoint_name: str, desired: dict) -> None:
        return None

    def instance_counts(self, endpoint_name: str) -> dict[str, int]:
        return {}


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operation=st.sampled_from(sorted(OPERATIONS)), params=shaped_values)
def test_the_control_plane_answers_any_json_with_an_aws_error_or_a_result(
    operation: str, params: Any
):
    async def run() -> None:
        store = Store.open("sqlite://")
        control = ControlPlane(store, _NoDeployer())
        try:
            await control.handle(operation, params)
        except AwsError as error:
            assert error.status < 500
        finally:
            await control.close()
            store.close()

    asyncio.run(run())
