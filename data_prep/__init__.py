"""Data preparation: meshes -> renders (pyrender) + voxels (trimesh) -> TFDS array_record datasets."""
