#!/usr/bin/env python3
"""CDK entry point: `cdk synth` / `cdk deploy` (see README, Deploy). Configuration is CDK context
(cdk.json, or `-c key=value`), read by infra.config.StackConfig."""

from __future__ import annotations

import sys

from aws_cdk import App

from infra.bundling import BundlingError, api_dependencies_layer
from infra.config import StackConfig
from infra.prepare import executor_layer_set
from infra.runtime_layers import LayersNotBuiltError
from infra.stack import build


def main() -> None:
    app = App()
    config = StackConfig.from_context(app.node)
    try:
        layer_set = executor_layer_set(config)
        api_dependencies_dir = api_dependencies_layer(config.architecture)
    except (LayersNotBuiltError, BundlingError) as error:
        sys.exit(f"cannot synthesize {config.stack_name}: {error}")
    build(app, config, layer_set=layer_set, api_dependencies_dir=api_dependencies_dir)
    app.synth()


if __name__ == "__main__":
    main()
