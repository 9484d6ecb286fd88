"""Deploy configuration and build inputs: what a user gets wrong shows as a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from infra.bundling import api_requirement_specs
from infra.config import StackConfig
from infra.runtime_layers import LayersNotBuiltError, read_layer_set
from tests.infra.conftest import (
    Synthesized,
    cdk_json_context,
    layer_manifest,
    synth_variant,
    write_layer_build,
)


def test_every_cdk_json_key_is_a_documented_setting_or_a_cdk_feature_flag() -> None:
    context = cdk_json_context()
    settings = {key: value for key, value in context.items() if not key.startswith("@aws-cdk/")}
    assert set(settings) == set(StackConfig.model_fields)
    # cdk.json restates the defaults: an empty context deploys the same stack.
    assert StackConfig.model_validate(settings) == StackConfig()
    reference = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    missing = [key for key in settings if f"`{key}`" not in reference]
    assert not missing, f"docs/deploy.md (Settings) does not document {missing}"


def test_stage_names_the_stack_so_two_stages_deploy_side_by_side() -> None:
    dev = StackConfig()
    prod = StackConfig.model_validate({"stage": "prod", "maxTimeoutMs": "600000"})  # `-c` strings
    assert dev.stack_name != prod.stack_name
    assert "prod" in prod.stack_name
    assert prod.maxTimeoutMs == 600_000
    assert prod.executor_timeout_seconds > 600
    assert prod.api_timeout_seconds > prod.executor_timeout_seconds


@pytest.mark.parametrize(
    ("context", "fragment"),
    [
        ({"maxTimeoutMs": 900_000}, "900 s"),
        ({"networkMode": "open"}, "networkMode"),
        ({"stage": "Prod!"}, "stage"),
        ({"logRetentionDays": 42}, "logRetentionDays"),
    ],
)
def test_invalid_settings_are_rejected_with_the_key_named(
    context: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValidationError, match=fragment):
        StackConfig.model_validate(context)


def test_missing_layer_build_names_the_command_that_builds_it(tmp_path: Path) -> None:
    with pytest.raises(LayersNotBuiltError, match=r"python -m layers\.build --arch arm64"):
        read_layer_set(tmp_path, "arm64")


def test_layer_build_over_lambdas_layer_count_is_refused(tmp_path: Path) -> None:
    arch_dir = write_layer_build(tmp_path, with_wheelhouse=False) / "x86_64"
    names = [f"l{index}" for index in range(6)]
    for name in names:
        (arch_dir / name / "python").mkdir(parents=True)
    layer_manifest("x86_64", names).write(arch_dir / "manifest.json")
    with pytest.raises(LayersNotBuiltError, match="Lambda allows 5"):
        read_layer_set(tmp_path, "x86_64")


def test_layer_set_finds_layers_and_wheelhouse(tmp_path: Path) -> None:
    layer_set = read_layer_set(write_layer_build(tmp_path), "x86_64")
    assert [layer.name for layer in layer_set.layers] == ["tiny"]
    assert (layer_set.layers[0].directory / "python" / "tinypkg").is_dir()
    assert layer_set.wheelhouse_dir is not None
    assert (layer_set.wheelhouse_dir / "index.json").is_file()


def test_api_dependencies_use_the_pins_of_requirements_txt(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        "# runtime\naws-lambda-powertools[tracer]>=3.20,<4  # events\npydantic==2.9.1\nnumpy\n"
    )
    specs = api_requirement_specs(requirements)
    assert "aws-lambda-powertools[tracer]>=3.20,<4" in specs
    assert "pydantic==2.9.1" in specs
    assert "numpy" not in specs  # the executor's packages come from the layers
    assert "boto3" in specs  # unpinned there: still bundled (TenantId needs a recent SDK)


@pytest.fixture(scope="module")
def internet_mode(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synth_variant(
        tmp_path_factory.mktemp("internet"), networkMode="internet", stage="web", retainData=False
    )


def test_internet_mode_has_no_vpc_and_installs_from_pypi(internet_mode: Synthesized) -> None:
    """Also the disposable variant (retainData=false): still cdk-nag clean."""
    assert internet_mode.stack_name.endswith("-web")
    assert not internet_mode.resources("AWS::EC2::VPC")
    functions = internet_mode.resources("AWS::Lambda::Function").values()
    [executor] = [
        fn for fn in functions if fn["Properties"]["Handler"] == "lambdas.executor.handler.handler"
    ]
    assert "VpcConfig" not in executor["Properties"]
    assert executor["Properties"]["TenancyConfig"] == {"TenantIsolationMode": "PER_TENANT"}
    [api] = [fn for fn in functions if fn["Properties"]["Handler"] == "lambdas.api.handler.handler"]
    variables = api["Properties"]["Environment"]["Variables"]
    assert variables["NETWORK_MODE"] == "internet"
    assert variables["WHEELHOUSE_URL"] == ""
    assert api["Properties"]["FunctionName"] == "LambdaCodeInterpreter-web-api"


def test_disposable_stage_deletes_its_data_on_destroy(internet_mode: Synthesized) -> None:
    for resource_type in ("AWS::S3::Bucket", "AWS::DynamoDB::Table", "AWS::Logs::LogGroup"):
        for resource in internet_mode.resources(resource_type).values():
            assert resource["DeletionPolicy"] == "Delete", resource_type
    # S3 refuses to delete a non-empty bucket: CDK empties it first.
    assert internet_mode.resources("Custom::S3AutoDeleteObjects")
