"""The CDK app's stack (`stack.py`), one construct per resource role — `storage`, `network`,
`runtime_layers`, `wheelhouse`, `executor`, `api_function`, `rest_api`, `observability` — its
configuration (`config`, CDK context), asset preparation without Docker (`bundling`, `prepare`)
and every accepted cdk-nag finding (`nag_acknowledgements`)."""
