"""Traces of per-kernel costs and a SimPy model of the NGPC cluster that replays them."""
