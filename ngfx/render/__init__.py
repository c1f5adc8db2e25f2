"""The four NGPC applications (NeRF, NSDF, GIA, NVR) on grid encodings."""
