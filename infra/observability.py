"""Alarms on what a user would notice (executor errors, throttles, slow runs, API 5xx) and one
dashboard. Alarms have no actions: subscribe them to your own topic or pager."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.config import StackConfig

PERIOD = Duration.minutes(5)


class Observability(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StackConfig,
        executor: lambda_.Function,
        api_function: lambda_.Function,
        api: apigw.RestApi,
    ) -> None:
        super().__init__(scope, construct_id)
        at_least_once = {
            "threshold": 1,
            "evaluation_periods": 1,
            "comparison_operator": cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            "treat_missing_data": cloudwatch.TreatMissingData.NOT_BREACHING,
        }
        p95_threshold_ms = (
            config.executor_timeout_seconds * 1000 * config.executorDurationAlarmPercent / 100
        )
        self.alarms = [
            cloudwatch.Alarm(
                self,
                "ExecutorErrors",
                alarm_description="The executor function failed (a crash, not a user-code error)",
                metric=executor.metric_errors(period=PERIOD, statistic="Sum"),
                **at_least_once,  # type: ignore[arg-type]
            ),
            cloudwatch.Alarm(
                self,
                "ExecutorThrottles",
                alarm_description="Executor invocations were throttled (concurrency exhausted)",
                metric=executor.metric_throttles(period=PERIOD, statistic="Sum"),
                **at_least_once,  # type: ignore[arg-type]
            ),
            cloudwatch.Alarm(
                self,
                "ExecutorDurationP95",
                alarm_description=(
                    f"p95 executor duration above {config.executorDurationAlarmPercent}% "
                    "of its timeout"
                ),
                metric=executor.metric_duration(period=PERIOD, statistic="p95"),
                threshold=p95_threshold_ms,
                evaluation_periods=3,
                datapoints_to_alarm=2,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
            cloudwatch.Alarm(
                self,
                "Api5xx",
                alarm_description="The API answered 5xx",
                metric=api.metric_server_error(period=PERIOD, statistic="Sum"),
                **at_least_once,  # type: ignore[arg-type]
            ),
            cloudwatch.Alarm(
                self,
                "ApiFunctionErrors",
                alarm_description="The API function failed",
                metric=api_function.metric_errors(period=PERIOD, statistic="Sum"),
                **at_least_once,  # type: ignore[arg-type]
            ),
        ]

        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", default_interval=Duration.hours(3))
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(alarms=self.alarms, title="Alarms", width=24, height=3)
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="API requests and errors",
                left=[
                    api.metric_count(period=PERIOD, statistic="Sum"),
                    api.metric_client_error(period=PERIOD, statistic="Sum"),
                    api.metric_server_error(period=PERIOD, statistic="Sum"),
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="API latency (p50, p95)",
                left=[
                    api.metric_latency(period=PERIOD, statistic="p50"),
                    api.metric_latency(period=PERIOD, statistic="p95"),
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="API function errors and duration p95",
                left=[api_function.metric_errors(period=PERIOD, statistic="Sum")],
                right=[api_function.metric_duration(period=PERIOD, statistic="p95")],
                width=8,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Executor invocations, errors, throttles",
                left=[
                    executor.metric_invocations(period=PERIOD, statistic="Sum"),
                    executor.metric_errors(period=PERIOD, statistic="Sum"),
                    executor.metric_throttles(period=PERIOD, statistic="Sum"),
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Executor duration (p50, p95, max)",
                left=[
                    executor.metric_duration(period=PERIOD, statistic="p50"),
                    executor.metric_duration(period=PERIOD, statistic="p95"),
                    executor.metric_duration(period=PERIOD, statistic="Maximum"),
                ],
                width=8,
            ),
            cloudwatch.GraphWidget(
                title="Executor concurrency",
                left=[executor.metric("ConcurrentExecutions", period=PERIOD, statistic="Maximum")],
                width=8,
            ),
        )
