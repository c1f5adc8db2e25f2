"""The apps of the NGPC paper (NeRF, NSDF, GIA, NVR): each builds its field, trains and renders through ops."""
