"""Engine cycle counts against hand-computed values, and the config loader."""

import pytest

from ngfx.errors import NgfxInputError
from ngfx.ngpc_sim.config import DEFAULT_CONFIG, load_config, parameter_sources
from ngfx.ngpc_sim.engines import encoding_cycles, mlp_cycles, mlp_layer_cycles, sram_passes, table_load_bytes
from ngfx.ngpc_sim.trace import Kernel


def _enc(encoding="hash_grid", n_levels=16, features=2, log2=18):
    return Kernel("e", "encoding", 1000, 0.0, 0.0, 0.0, 1e-3, encoding=encoding, n_levels=n_levels,
                  n_features_per_level=features, log2_hashmap_size=log2, n_dims=3)


DEFAULT_TEXT = DEFAULT_CONFIG.read_text()


@pytest.fixture
def cfg():
    return load_config()


def test_encoding_cycles_by_hand(cfg):
    # hash grid: 1 input per cycle, 2^18 x 2 x fp16 = 1 MiB fits one SRAM: 1000 + 16 fill cycles
    assert encoding_cycles(_enc(), 1000, cfg) == 1000 + 16
    # multi-res dense grid: 2 inputs per cycle -> ceil(1001 / 2) = 501
    assert encoding_cycles(_enc("multires_dense_grid", 8), 1001, cfg) == 501 + 16
    # low-res dense grid: 8 per cycle
    assert encoding_cycles(_enc("lowres_dense_grid", 1, 4, 15), 1000, cfg) == 125 + 16
    # T = 2^19: 2 MiB per level = two SRAM pieces -> two passes
    assert sram_passes(_enc(log2=19), cfg) == 2
    assert encoding_cycles(_enc(log2=19), 1000, cfg) == 2 * 1000 + 16
    # 24 levels on 16 level units: two rounds
    assert encoding_cycles(_enc(n_levels=24), 1000, cfg) == 2 * (1000 + 16)
    assert encoding_cycles(_enc(), 0, cfg) == 0
    assert table_load_bytes(_enc(), cfg) == 16 * 2**18 * 2 * 2


def test_mlp_cycles_by_hand(cfg):
    # 64x64 array: a 32->64 layer is one tile: n + 64 + 64 fill cycles
    assert mlp_layer_cycles(64, 32, 1000, cfg) == 1000 + 128
    # 128->128 is 2 x 2 tiles
    assert mlp_layer_cycles(128, 128, 1000, cfg) == 4 * (1000 + 128)
    k = Kernel("m", "mlp", 1000, 0.0, 0.0, 0.0, 1e-3, encoding="hash_grid", mlp_layers=[[64, 32], [64, 64], [3, 64]])
    assert mlp_cycles(k, 1000, cfg) == 3 * (1000 + 128)
    # without layers: FLOPs give 7168 MACs per input -> 2 full tiles
    k = Kernel("m", "mlp", 1000, 2.0 * 1000 * 7168, 0.0, 0.0, 1e-3, encoding="hash_grid")
    assert mlp_cycles(k, 500, cfg) == 2 * (500 + 128)


def test_config_sources_and_errors(tmp_path):
    cfg = load_config(gpu="h200")
    assert cfg.gpu.memory_bytes_per_s == 4.3e12 and cfg.fused_rest_speedup == 9.94
    sources = parameter_sources()
    assert "paper" in sources["ngpc.fused_rest_speedup"][1] and "assumed" in sources["ngpc.batches_per_frame"][1]
    with pytest.raises(NgfxInputError, match="gpu"):
        load_config(gpu="rtx9999")
    bad = tmp_path / "bad.toml"
    bad.write_text(DEFAULT_TEXT.replace("mac_rows = 64", "mac_rows = -64"))
    with pytest.raises(NgfxInputError, match="mac_rows"):
        load_config(bad)
    bad.write_text("[ngpc\n")
    with pytest.raises(NgfxInputError, match="malformed TOML"):
        load_config(bad)


@pytest.mark.parametrize("line, field", [
    ("mac_rows = nan", "ngpc.mac_rows"),
    ("mac_rows = 0.5", "ngpc.mac_rows"),
    ("mac_rows = true", "ngpc.mac_rows"),
    ("mac_rows = \"64\"", "ngpc.mac_rows"),
    ("batches_per_frame = 1e12", "ngpc.batches_per_frame"),
    ("clock_hz = inf", "ngpc.clock_hz"),
])
def test_config_numbers_checked_by_type_and_range(tmp_path, line, field):
    key = line.split(" =")[0]
    text = "\n".join(line if l.startswith(key + " ") else l for l in DEFAULT_TEXT.splitlines())
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(NgfxInputError, match=field.replace(".", r"\.")):
        load_config(bad)


def test_config_gpu_and_shape_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(DEFAULT_TEXT.replace("n_sms = 82", "n_sms = -82"))
    with pytest.raises(NgfxInputError, match=r"gpu\.rtx3090\.n_sms"):
        load_config(bad)
    bad.write_text(DEFAULT_TEXT.replace("[ngpc]", "ngpc = 3\n[unused]"))
    with pytest.raises(NgfxInputError, match="ngpc"):
        load_config(bad)
    with pytest.raises(NgfxInputError, match="folder"):
        load_config(tmp_path)
    with pytest.raises(NgfxInputError, match="n_nfps"):
        load_config().replace(n_nfps=0)
