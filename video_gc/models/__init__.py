"""Video ResNets and global-context blocks."""
