"""The executor's network: a VPC with isolated subnets only (no NAT, no internet gateway) whose
one way out is an S3 gateway endpoint restricted to this deployment's bucket.

The executor holds no S3 permissions: it reaches S3 only with presigned URLs the API function
put in the invocation, and reads the wheelhouse without credentials, which the bucket allows
only through this endpoint.

DNS is the other way out: the VPC's resolver recurses to the internet, so a query for
`<data>.attacker.example` reaches the attacker's name server without any route. With
`dnsFirewall` (default) Route 53 Resolver DNS Firewall answers only the bucket's regional host
(`<bucket>.s3.<region>.amazonaws.com`, what presigned URLs and the wheelhouse URL name) and
NXDOMAIN to everything else.
"""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53resolver as resolver
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import StackConfig
from lambdas.shared import storage

HTTPS_PORT = 443
MAX_AZS = 2
# DNS Firewall rule priorities (within the group) and the group's priority on the VPC (DNS
# Firewall accepts 101-9899 for associations).
ALLOW_RULE_PRIORITY = 100
BLOCK_RULE_PRIORITY = 200
FIREWALL_ASSOCIATION_PRIORITY = 101


class Network(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: StackConfig, bucket: s3.IBucket
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=MAX_AZS,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
                )
            ],
            restrict_default_security_group=False,
        )
        self.subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        flow_log_group = logs.LogGroup(
            self, "FlowLogs", retention=config.log_retention, removal_policy=config.removal_policy
        )
        # Rejected traffic only: that is where an escape attempt shows, at a fraction of the cost.
        self.vpc.add_flow_log(
            "RejectedFlows",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )

        self.s3_endpoint = self.vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[self.subnets]
        )
        # Whatever credentials a request carries, through this endpoint only this bucket's
        # session/execution objects (presigned by the API) and the wheelhouse are reachable.
        self.s3_endpoint.add_to_policy(
            iam.PolicyStatement(
                sid="ThisDeploymentsObjectsOnly",
                principals=[iam.AnyPrincipal()],
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[
                    bucket.arn_for_objects(f"{storage.SESSIONS_PREFIX}*"),
                    bucket.arn_for_objects(f"{storage.EXECUTIONS_PREFIX}*"),
                ],
            )
        )
        self.s3_endpoint.add_to_policy(
            iam.PolicyStatement(
                sid="WheelhouseRead",
                principals=[iam.AnyPrincipal()],
                actions=["s3:GetObject"],
                resources=[bucket.arn_for_objects(f"{storage.WHEELHOUSE_PREFIX}*")],
            )
        )
        # Anonymous wheelhouse reads, from this endpoint only; a fixed aws:SourceVpce condition
        # keeps the policy non-public under Block Public Access.
        bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="WheelhouseReadThroughExecutorEndpoint",
                principals=[iam.AnyPrincipal()],
                actions=["s3:GetObject"],
                resources=[bucket.arn_for_objects(f"{storage.WHEELHOUSE_PREFIX}*")],
                conditions={"StringEquals": {"aws:SourceVpce": self.s3_endpoint.vpc_endpoint_id}},
            )
        )

        self.executor_security_group = ec2.SecurityGroup(
            self,
            "ExecutorSecurityGroup",
            vpc=self.vpc,
            description="Executor: no inbound; outbound HTTPS, routed only to the S3 endpoint",
            allow_all_outbound=False,
        )
        # The route tables hold no default route: the only reachable HTTPS peer is the S3
        # gateway endpoint (whose prefix list is region-specific, so not named here).
        self.executor_security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS_PORT), "S3 through the gateway endpoint"
        )
        if config.dnsFirewall:
            self._dns_firewall(bucket)

    def _dns_firewall(self, bucket: s3.IBucket) -> None:
        allowed = resolver.CfnFirewallDomainList(
            self,
            "ExecutorAllowedDomains",
            domains=[bucket.bucket_regional_domain_name],
        )
        everything = resolver.CfnFirewallDomainList(self, "EverythingElse", domains=["*"])
        rules = resolver.CfnFirewallRuleGroup(
            self,
            "ExecutorDnsFirewall",
            firewall_rules=[
                resolver.CfnFirewallRuleGroup.FirewallRuleProperty(
                    action="ALLOW",
                    priority=ALLOW_RULE_PRIORITY,
                    firewall_domain_list_id=allowed.attr_id,
                    # S3 answers with a CNAME chain to its own hosts: trusted, not re-checked.
                    firewall_domain_redirection_action="TRUST_REDIRECTION_DOMAIN",
                ),
                resolver.CfnFirewallRuleGroup.FirewallRuleProperty(
                    action="BLOCK",
                    priority=BLOCK_RULE_PRIORITY,
                    firewall_domain_list_id=everything.attr_id,
                    block_response="NXDOMAIN",
                ),
            ],
        )
        resolver.CfnFirewallRuleGroupAssociation(
            self,
            "ExecutorDnsFirewallAssociation",
            firewall_rule_group_id=rules.attr_id,
            vpc_id=self.vpc.vpc_id,
            priority=FIREWALL_ASSOCIATION_PRIORITY,
        )
