"""bench/sun_sd15.py: the JSON of a tiny run, and the analytic FLOP ratio on the SD-1.5 layout."""

import json

import pytest

from bench import sun_sd15


def test_tiny_run_prints_one_json_object_with_the_sizes_and_intervals(capsys):
    sun_sd15.main(["--tiny", "--no-results", "--threads", "1", "--repeats", "2", "--warmup", "0"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["bench"] == "sun_sd15" and out["layout"] == "tiny"
    assert out["latent_shape"] == [1, 4, 8, 8] and out["image_px"] == 64
    assert (out["ref_unet_evals"], out["sun_unet_evals"]) == (50, 4)
    assert out["threads"] == [1] and out["repeats"] == 2 and out["finite"]
    assert out["cross_attention_layers"] == 10  # 1 per down level x 3, mid 1, 2 per up level x 3
    for key in ("ref_s_t1", "sun_s_t1", "speedup_t1"):
        assert out[f"{key}_lo"] <= out[key] <= out[f"{key}_hi"]
    assert len(out["speedup_t1_rounds"]) == 2
    assert out["flops_call_cfg"] == 2 * out["flops_call_plain"]
    assert out["flop_ratio"] == pytest.approx(12.5 / (1 + out["adapter_flop_overhead"]))


def test_bad_arguments_are_refused():
    for bad in (["--threads", "one"], ["--latent", "12"], ["--repeats", "0"]):
        with pytest.raises(SystemExit):
            sun_sd15.parse_args(bad)


def test_sd15_flop_ratio_at_native_resolution_is_about_12x():
    # 25 CFG steps (50 evaluations) vs 4 single passes: 12.5x less the adapter's extra work
    f = sun_sd15.flop_summary(sun_sd15.SD15_UNET, 1, 64, sun_sd15.SD15_TEXT_TOKENS)
    assert f["flops_call_cfg"] == 2 * f["flops_call_plain"]
    assert 0.01 < f["adapter_flop_overhead"] < 0.02  # 16 layers: 2 more 77-token branches each
    assert 12.2 < f["flop_ratio"] < 12.5
