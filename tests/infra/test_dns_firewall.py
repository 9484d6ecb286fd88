"""DNS is a way out of the isolated VPC (a query for `<data>.attacker.example` reaches the
attacker's name server even with no route to the internet): Route 53 Resolver DNS Firewall
answers only the name the executor needs, this bucket's regional S3 host (issue 12, item 9)."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import StackConfig
from tests.infra.conftest import Synthesized, cdk_json_context, synth_variant


def _single(synthesized: Synthesized, resource_type: str) -> tuple[str, dict[str, Any]]:
    found = synthesized.resources(resource_type)
    assert len(found) == 1, f"{resource_type}: {list(found)}"
    [(logical_id, resource)] = found.items()
    return logical_id, resource["Properties"]


def test_dns_firewall_is_on_by_default_in_isolated_mode() -> None:
    assert StackConfig().dnsFirewall is True
    assert cdk_json_context()["dnsFirewall"] is True


@pytest.mark.attack(
    "network",
    "user code sends data out in DNS queries (`<data>.attacker.example`) from the isolated VPC",
    "the VPC's DNS firewall resolves only this bucket's regional S3 host and answers NXDOMAIN to "
    "every other name",
)
def test_the_executor_vpc_resolves_only_the_buckets_regional_s3_host(
    synthesized: Synthesized,
) -> None:
    lists = {
        logical_id: resource["Properties"]["Domains"]
        for logical_id, resource in synthesized.resources(
            "AWS::Route53Resolver::FirewallDomainList"
        ).items()
    }
    [(allowed_id, allowed)] = [(k, v) for k, v in lists.items() if v != ["*"]]
    [(everything_id, _)] = [(k, v) for k, v in lists.items() if v == ["*"]]
    # Exactly the host the API presigns for and the wheelhouse lives on (no wildcard).
    [domain] = allowed
    assert domain["Fn::GetAtt"][1] == "RegionalDomainName"
    bucket = synthesized.template["Resources"][domain["Fn::GetAtt"][0]]
    assert bucket["Type"] == "AWS::S3::Bucket"

    group_id, group = _single(synthesized, "AWS::Route53Resolver::FirewallRuleGroup")
    rules = sorted(group["FirewallRules"], key=lambda rule: rule["Priority"])
    assert [rule["Action"] for rule in rules] == ["ALLOW", "BLOCK"]
    assert rules[0]["FirewallDomainListId"] == {"Fn::GetAtt": [allowed_id, "Id"]}
    # S3's answer is a CNAME chain; the allowed name's chain is trusted, not re-inspected.
    assert rules[0]["FirewallDomainRedirectionAction"] == "TRUST_REDIRECTION_DOMAIN"
    assert rules[1]["FirewallDomainListId"] == {"Fn::GetAtt": [everything_id, "Id"]}
    assert rules[1]["BlockResponse"] == "NXDOMAIN"

    _, association = _single(synthesized, "AWS::Route53Resolver::FirewallRuleGroupAssociation")
    assert association["FirewallRuleGroupId"] == {"Fn::GetAtt": [group_id, "Id"]}
    [vpc_id] = synthesized.resources("AWS::EC2::VPC")
    assert association["VpcId"] == {"Ref": vpc_id}
    assert 100 < association["Priority"] < 10000  # the range DNS Firewall accepts


@pytest.fixture(scope="module")
def without_dns_firewall(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synth_variant(tmp_path_factory.mktemp("nodnsfw"), dnsFirewall=False, stage="nofw")


def test_the_firewall_can_be_turned_off(without_dns_firewall: Synthesized) -> None:
    for resource_type in (
        "AWS::Route53Resolver::FirewallDomainList",
        "AWS::Route53Resolver::FirewallRuleGroup",
        "AWS::Route53Resolver::FirewallRuleGroupAssociation",
    ):
        assert not without_dns_firewall.resources(resource_type)
    assert without_dns_firewall.resources("AWS::EC2::VPC")  # still isolated
