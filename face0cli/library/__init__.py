"""The character library: FaceStore over HDF5, face-space operations (mix, lerp, direction), the GMM of faces."""
