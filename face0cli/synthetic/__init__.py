"""The synthetic world: procedural portraits, the synthetic embedder and judge, the build of the default model."""
