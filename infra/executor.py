"""The executor: the untrusted zone (SPEC §1).

Tenant isolation PER_TENANT (one session or principal per execution environment), a role that
can only write the function's own log group, no secrets in its environment, and by default a VPC
whose only way out is the bucket's S3 endpoint.
"""

from __future__ import annotations

from aws_cdk import Duration, Size
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.bundling import stage_sources
from infra.config import StackConfig
from infra.function_identity import own_log_group_and_role
from infra.network import Network

EXECUTOR_HANDLER = "lambdas.executor.handler.handler"
EXECUTOR_SOURCES = ["lambdas/__init__.py", "lambdas/executor", "lambdas/shared"]
# What Lambda itself needs to attach a VPC function; it calls these with the execution role.
LAMBDA_VPC_ACTIONS = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
]
LOG_WRITE_ACTIONS = ["logs:CreateLogStream", "logs:PutLogEvents"]


class Executor(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StackConfig,
        architecture: lambda_.Architecture,
        layers: list[lambda_.ILayerVersion],
        network: Network | None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group, self.role = own_log_group_and_role(
            self, config, "Executor: writes its own logs, nothing else"
        )
        # Lambda stamps lambda:SourceFunctionArn on every call made with these credentials from
        # inside the environment (and on its own log delivery), never on its ENI management.
        # So even leaked credentials can do nothing but write this function's logs.
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="DenyEverythingButLogsFromFunctionCode",
                effect=iam.Effect.DENY,
                not_actions=LOG_WRITE_ACTIONS,
                resources=["*"],
                conditions={"Null": {"lambda:SourceFunctionArn": "false"}},
            )
        )
        vpc_options: dict[str, object] = {}
        if network is not None:
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid="LambdaManagesVpcInterfaces", actions=LAMBDA_VPC_ACTIONS, resources=["*"]
                )
            )
            vpc_options = {
                "vpc": network.vpc,
                "vpc_subnets": network.subnets,
                "security_groups": [network.executor_security_group],
                "allow_public_subnet": False,
            }

        self.function = lambda_.Function(
            self,
            "Function",
            description="Lambda Code Interpreter executor (untrusted code, tenant-isolated)",
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=architecture,
            handler=EXECUTOR_HANDLER,
            code=lambda_.Code.from_asset(str(stage_sources(EXECUTOR_SOURCES))),
            layers=layers,
            memory_size=config.executorMemoryMb,
            ephemeral_storage_size=Size.mebibytes(config.executorEphemeralStorageMb),
            timeout=Duration.seconds(config.executor_timeout_seconds),
            role=self.role,
            log_group=self.log_group,
            tenancy_config=lambda_.TenancyConfig.PER_TENANT,
            reserved_concurrent_executions=config.reservedConcurrency or None,
            **vpc_options,  # type: ignore[arg-type]
        )
