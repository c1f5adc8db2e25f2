"""Rendering operations: each op's PyTorch twin in ``<op>.py`` and its Triton kernel, same name and signature, in
``triton_<op>.py``."""
