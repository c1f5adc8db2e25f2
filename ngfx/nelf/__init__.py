"""MobileR2L-style neural light fields: network, distillation from a NeRF, mobile-latency report."""
