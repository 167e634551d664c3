"""Faces: images in, detection and the paper's margin crop, face embedders (InceptionResnetV1; the synthetic one)."""
