"""The stack: one construct per resource role, wired together, plus its outputs."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import App, Aws, CfnOutput, Fn, Stack, Tags, Validations
from aws_cdk import aws_lambda as lambda_
from cdk_nag import AwsSolutionsChecks
from constructs import Construct

from infra.api_function import ApiFunction
from infra.config import StackConfig
from infra.executor import Executor
from infra.nag_acknowledgements import acknowledge_findings
from infra.network import Network
from infra.observability import Observability
from infra.rest_api import RestApi
from infra.runtime_layers import LayerSet, RuntimeLayers
from infra.storage import Storage
from infra.wheelhouse import Wheelhouse

ARCHITECTURES = {"x86_64": lambda_.Architecture.X86_64, "arm64": lambda_.Architecture.ARM_64}


class CodeInterpreterStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StackConfig,
        layer_set: LayerSet,
        api_dependencies_dir: Path,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description=f"Lambda Code Interpreter, stage {config.stage}",
        )
        self.config = config
        architecture = ARCHITECTURES[config.architecture]
        self.storage = Storage(self, "Storage", config=config)
        self.network = (
            Network(self, "Network", config=config, bucket=self.storage.bucket)
            if config.networkMode == "isolated"
            else None
        )
        self.layers = RuntimeLayers(
            self,
            "Layers",
            executor_layer_builds=layer_set.layers,
            api_dependencies_dir=api_dependencies_dir,
            architecture=architecture,
        )
        # Isolated executors fetch on-demand wheels from the bucket; internet ones from PyPI.
        self.wheelhouse = (
            Wheelhouse(
                self,
                "Wheelhouse",
                config=config,
                bucket=self.storage.bucket,
                source_dir=layer_set.wheelhouse_dir,
                size_bytes=layer_set.wheelhouse_bytes,
            )
            if self.network is not None and layer_set.wheelhouse_dir is not None
            else None
        )
        self.executor = Executor(
            self,
            "Executor",
            config=config,
            architecture=architecture,
            layers=self.layers.executor_layers,
            network=self.network,
        )
        self.api_function = ApiFunction(
            self,
            "ApiFunction",
            config=config,
            architecture=architecture,
            dependencies_layer=self.layers.api_dependencies,
            table=self.storage.table,
            bucket=self.storage.bucket,
            executor=self.executor.function,
            wheelhouse_url=self.wheelhouse.index_url if self.wheelhouse else "",
        )
        self.rest_api = RestApi(self, "RestApi", config=config, handler=self.api_function.function)
        self.observability = Observability(
            self,
            "Observability",
            config=config,
            executor=self.executor.function,
            api_function=self.api_function.function,
            api=self.rest_api.api,
        )
        Tags.of(self).add("project", "lambda-code-interpreter")
        Tags.of(self).add("stage", config.stage)

        api = self.rest_api.api
        key_id = self.rest_api.api_key.key_id
        CfnOutput(self, "ApiUrl", value=api.url, description="Base URL; routes start with v1/")
        CfnOutput(self, "HealthUrl", value=f"{api.url}v1/health", description="No key needed")
        CfnOutput(self, "ApiKeyId", value=key_id, description="Send its value as x-api-key")
        CfnOutput(
            self,
            "GetApiKeyCommand",
            value=Fn.join(
                "",
                [
                    "aws apigateway get-api-key --api-key ",
                    key_id,
                    " --include-value --query value --output text --region ",
                    Aws.REGION,
                ],
            ),
            description="Prints the API key's value",
        )
        CfnOutput(
            self,
            "DashboardName",
            value=self.observability.dashboard.dashboard_name,
        )


def build(
    app: App,
    config: StackConfig,
    *,
    layer_set: LayerSet,
    api_dependencies_dir: Path,
) -> CodeInterpreterStack:
    """The stack in `app`, with cdk-nag's AwsSolutions pack checking it on every synth."""
    stack = CodeInterpreterStack(
        app,
        config.stack_name,
        config=config,
        layer_set=layer_set,
        api_dependencies_dir=api_dependencies_dir,
    )
    acknowledge_findings(stack)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack
