"""HTTP API v1 on Powertools' REST resolver: one `Router` per resource family,
included by `app.build_resolver`; `app.handle` is the entry for API Gateway proxy events."""
