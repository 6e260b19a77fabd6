"""Pixels: decoding, optics (scale, glass), segmentation, cell crops, synthetic smears."""
