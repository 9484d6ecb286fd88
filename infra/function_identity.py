"""A Lambda function's own log group and a role that starts with nothing but writing to it.

Both functions get their own role (no AWS managed policy) so each grant is visible in the
template; the executor adds nothing else, the API function adds its `grant_*` calls.
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import StackConfig


def own_log_group_and_role(
    scope: Construct, config: StackConfig, description: str
) -> tuple[logs.LogGroup, iam.Role]:
    log_group = logs.LogGroup(
        scope, "Logs", retention=config.log_retention, removal_policy=config.removal_policy
    )
    role = iam.Role(
        scope,
        "Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=description,
    )
    log_group.grant_write(role)
    return log_group, role
