"""Every cdk-nag (AwsSolutions) finding this stack accepts, each with its reason. One place.

cdk-nag 3 reads acknowledgements from `Validations.of(construct).acknowledge(...)`; one applies
to the construct and everything below it, and each finding of a multi-finding rule (IAM5) is
acknowledged by its own id. Anything not listed here fails `cdk synth`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, DefaultStackSynthesizer, Stack, Validations
from constructs import IConstruct

if TYPE_CHECKING:
    from infra.stack import CodeInterpreterStack

_PACK = "AwsSolutions::AwsSolutions-"
# CDK's BucketDeployment runs one handler function per stack, a direct child of the stack.
_BUCKET_DEPLOYMENT_HANDLER_PREFIX = "Custom::CDKBucketDeployment"
_S3_GRANT_ACTIONS = ("Abort*", "DeleteObject*", "GetBucket*", "GetObject*", "List*")


def _ack(construct: IConstruct, rule: str, reason: str) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=f"{_PACK}{rule}", reason=reason))


def _logical_id(construct: IConstruct) -> str:
    return Stack.of(construct).resolve(construct.node.default_child.logical_id)  # type: ignore[union-attr]


def acknowledge_findings(stack: CodeInterpreterStack) -> None:
    runtime_reason = (
        "The product targets python3.13 (SPEC §4): the package layers, precompiled .pyc files "
        "and wheel tags are built for it; a runtime bump is a deliberate, tested change."
    )
    _ack(stack.executor.function, "L1", runtime_reason)
    _ack(stack.api_function.function, "L1", runtime_reason)

    # Executor role: what Lambda needs to attach a VPC function. The ENI actions do not support
    # resource-level scoping for Describe*, and a Deny keyed on lambda:SourceFunctionArn keeps
    # the function's own code from using any of them.
    if stack.network is not None:
        _ack(
            stack.executor.role,
            "IAM5[Resource::*]",
            "ec2 network-interface actions Lambda performs with the execution role to attach "
            "the function to the VPC; function code is denied them (lambda:SourceFunctionArn).",
        )

    api_role = stack.api_function.role
    _ack(
        api_role,
        "IAM5[Resource::*]",
        "X-Ray PutTraceSegments/PutTelemetryRecords and dynamodb:ListStreams (the table "
        "stream's event source) support no resource-level permissions.",
    )
    bucket_id = _logical_id(stack.storage.bucket)
    _ack(
        api_role,
        f"IAM5[Resource::<{bucket_id}.Arn>/*]",
        "The API function presigns, lists and deletes objects of any session under this "
        "deployment's bucket (granted with grant_read_write on this bucket only).",
    )
    for action in _S3_GRANT_ACTIONS:
        _ack(
            api_role,
            f"IAM5[Action::s3:{action}]",
            "CDK grant_read_write action groups, scoped to this deployment's bucket.",
        )
    executor_id = _logical_id(stack.executor.function)
    _ack(
        api_role,
        f"IAM5[Resource::<{executor_id}.Arn>:*]",
        "grant_invoke covers the executor's versions and aliases; it is still one function.",
    )

    rest_api = stack.rest_api
    _ack(
        rest_api.api,
        "APIG4",
        "Authentication is by API key (required on every method but GET /v1/health and "
        "GET /v1/openapi.json, public by design) with a usage plan per key, as SPEC §3 defines.",
    )
    _ack(
        rest_api.api,
        "COG4",
        "Callers are programs (SDK, CLI, MCP server, agents) identified by API keys, not "
        "Cognito users.",
    )
    _ack(
        rest_api.api,
        "APIG3",
        "No WAF by default (fixed monthly cost); per-key throttling and quotas come from the "
        "usage plan. Associate a web ACL with the stage if your account requires one.",
    )
    if stack.config.apiGatewayCloudWatchRole:
        _ack(
            rest_api.api,
            "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "The account-wide role API Gateway needs to deliver access logs; AWS maintains it.",
        )

    if stack.wheelhouse is not None:
        _acknowledge_wheelhouse_copy(stack, bucket_id)


def _acknowledge_wheelhouse_copy(stack: CodeInterpreterStack, bucket_id: str) -> None:
    """The handler CDK's BucketDeployment brings along (it copies the wheelhouse at deploy
    time); its code and permissions are CDK's, not ours."""
    qualifier = (
        stack.node.try_get_context("@aws-cdk/core:bootstrapQualifier")
        or DefaultStackSynthesizer.DEFAULT_QUALIFIER
    )
    for handler in stack.node.children:
        if not handler.node.id.startswith(_BUCKET_DEPLOYMENT_HANDLER_PREFIX):
            continue
        _ack(handler, "L1", "CDK's BucketDeployment handler; CDK chooses and updates its runtime.")
        _ack(
            handler,
            "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSLambdaBasicExecutionRole]",
            "CDK's BucketDeployment handler writes its logs with the basic execution policy.",
        )
        for action in _S3_GRANT_ACTIONS:
            _ack(
                handler,
                f"IAM5[Action::s3:{action}]",
                "CDK grant action groups: read the asset bucket, sync the wheelhouse prefix.",
            )
        _ack(
            handler,
            f"IAM5[Resource::arn:<AWS::Partition>:s3:::cdk-{qualifier}-assets-"
            "<AWS::AccountId>-<AWS::Region>/*]",
            "Reads the wheelhouse asset zip from the CDK bootstrap asset bucket.",
        )
        _ack(
            handler,
            f"IAM5[Resource::<{bucket_id}.Arn>/*]",
            "Writes (and prunes) the wheelhouse objects in this deployment's bucket.",
        )
