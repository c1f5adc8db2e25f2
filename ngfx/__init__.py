"""ngfx: neural graphics toolkit.

Subpackages, imported one way only: ``encodings`` (base) <- ``render`` <- ``nelf``;
``ngpc_sim`` reads traces and never imports ``render`` (except its trace capture).
"""

__version__ = "0.1.0"
