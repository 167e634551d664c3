"""The Face0 model: projector, conditioning, three-way guidance, Face0Pipeline and its directory format."""
