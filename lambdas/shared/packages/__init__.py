"""The package whitelist and the layer build's outputs, as the runtime sees them.

    catalog.py        the whitelist (`whitelist.toml`): what a request may name, and why not
    requirements.py   the one requirement-name parser (catalog, layers build, API bundling)
    manifest.py       `LayerManifest`: what `python -m layers.build` built (sizes, layers)
    layout.py         where the build puts layers, manifest and wheelhouse; wheelhouse S3 keys

Pure Python (tomllib, packaging, pydantic): it ships in the API function, which builds nothing;
the builder itself lives in `layers/` and imports from here, never the other way round.
"""
