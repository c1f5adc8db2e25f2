"""Grid encodings and small fused MLPs behind one API (see :mod:`ngfx.encodings.grid`)."""

from ngfx.encodings.config import GridConfig, MLPConfig, hash_grid_config, parse_grid_config, parse_network_config
from ngfx.encodings.grid import Encoding, Network, NetworkWithInputEncoding, resolve_backend

__all__ = [
    "Encoding", "Network", "NetworkWithInputEncoding", "GridConfig", "MLPConfig", "hash_grid_config",
    "parse_grid_config", "parse_network_config", "resolve_backend",
]
