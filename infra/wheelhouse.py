"""The wheelhouse of on-demand packages, copied into the bucket at deploy time.

The executor (isolated network) reads it without credentials through its S3 endpoint, which
the bucket policy allows for this prefix only (see infra/network.py).
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Size
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from infra.config import StackConfig
from lambdas.shared.packages.layout import wheelhouse_key_prefix

MIB = 1024 * 1024
# The copy unpacks the asset zip in /tmp: room for the zip and its content, plus slack.
_MIN_EPHEMERAL_MIB = 1024
_MAX_EPHEMERAL_MIB = 10240


class Wheelhouse(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StackConfig,
        bucket: s3.IBucket,
        source_dir: Path,
        size_bytes: int,
    ) -> None:
        super().__init__(scope, construct_id)
        ephemeral_mib = min(
            _MAX_EPHEMERAL_MIB, max(_MIN_EPHEMERAL_MIB, 3 * size_bytes // MIB + 512)
        )
        self.key_prefix = wheelhouse_key_prefix(config.architecture)
        self.deployment = s3deploy.BucketDeployment(
            self,
            "Copy",
            sources=[s3deploy.Source.asset(str(source_dir))],
            destination_bucket=bucket,
            destination_key_prefix=self.key_prefix,
            prune=True,
            retain_on_delete=False,
            memory_limit=1024,
            ephemeral_storage_size=Size.mebibytes(ephemeral_mib),
            log_group=logs.LogGroup(
                self, "Logs", retention=config.log_retention, removal_policy=config.removal_policy
            ),
        )
        # Where the executor fetches from: the bucket's regional endpoint, routed through the
        # VPC's S3 gateway endpoint.
        self.index_url = f"https://{bucket.bucket_regional_domain_name}/{self.key_prefix}"
