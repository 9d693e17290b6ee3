"""Video decoding, sampling, transforms, datasets and loaders."""
