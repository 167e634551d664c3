"""The synthetic world: procedural portraits, the synthetic embedder and judge, the build of the default model."""

# the build's stages in order (synthetic.build runs them; here so that the CLI lists them without importing it)
STAGES = (
    "world", "detect", "embedder", "judge", "vae", "prep", "base", "face0", "tune", "package", "characters",
    "scorecard",
)  # fmt: skip

# the kinds of planted bias the world can draw (synthetic.portraits.planted_profession; here for the CLI, as above)
PLANTED = ("hair", "beard", "bald")
