"""lipsync.average / checkpoints.average: uniform weight averaging of saves of one model."""

from __future__ import annotations

import torch

from lipsync import checkpoints
from lipsync.average import cli
from lipsync.models import create_model

SMALL = {"decoder_channels": (8, 8, 8, 8, 8), "audio_width": 0.125}


def saved_generator(path, seed: int, steps: int, **config):
    torch.manual_seed(seed)
    model = create_model("marlin_lip_tiny", **{**SMALL, **config}).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(steps)
    checkpoints.save(path, model, {"steps": steps, "trained_on": "test clips"})
    return model


def test_cli_writes_the_mean_of_the_files(tmp_path, capsys):
    models = [saved_generator(tmp_path / f"g{k}.safetensors", seed=k, steps=100 * (k + 1)) for k in range(3)]
    out = tmp_path / "avg.safetensors"
    assert cli([str(tmp_path / f"g{k}.safetensors") for k in range(3)] + ["--out", str(out)]) == 0
    loaded = checkpoints.load(out)
    assert loaded.model.config == models[0].config
    assert loaded.meta["steps"] == 300 and loaded.meta["trained_on"] == "test clips"
    assert [a["steps"] for a in loaded.meta["averaged_from"]] == [100, 200, 300]
    got = loaded.model.state_dict()
    states = [m.state_dict() for m in models]
    n_float = 0
    for key, value in got.items():
        if value.is_floating_point():
            want = (sum(s[key].double() for s in states) / 3).float()
            assert torch.allclose(value, want, rtol=0, atol=1e-7), key
            n_float += 1
            if not torch.equal(states[0][key], states[1][key]):  # really changed by averaging
                assert not torch.equal(value, states[2][key]), key
        else:  # batch counters: the last file's
            assert torch.equal(value, states[2][key]), key
    assert n_float > 10
    # the same result through the API
    api = checkpoints.average([tmp_path / f"g{k}.safetensors" for k in range(3)]).model.state_dict()
    assert all(torch.equal(api[k], got[k]) for k in got)


def test_identical_inputs_average_to_themselves(tmp_path):
    model = saved_generator(tmp_path / "a.safetensors", seed=5, steps=10)
    checkpoints.save(tmp_path / "b.safetensors", model, {"steps": 10})
    averaged = checkpoints.average([tmp_path / "a.safetensors", tmp_path / "b.safetensors"]).model
    own = model.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in averaged.state_dict().items())


def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path, capsys):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    saved_generator(a, seed=1, steps=1)
    saved_generator(b, seed=2, steps=2, decoder_channels=(8, 8, 8, 8, 16))
    before = a.read_bytes()
    out = tmp_path / "out.safetensors"
    cases = [
        ([str(a), "--out", str(out)], "at least two"),
        ([str(a), str(b), "--out", str(out)], "differs"),
        ([str(a), str(tmp_path / "missing.safetensors"), "--out", str(out)], "no such file"),
        ([str(a), str(a), "--out", str(a)], "one of the inputs"),
        ([str(a), str(a), "--out", str(tmp_path / "nope" / "o.safetensors")], "does not exist"),
        ([str(a), "--out", str(out), "--set", "decoder_channels=[8,8,8,8,16]"], "changes the weights"),
        ([str(a), "--out", str(out), "--set", "copy_bias"], "KEY=VALUE"),
        ([str(a), "--out", str(out), "--set", "copy_bias=1"], "composite=True"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert cli(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert a.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors"]


def test_set_resaves_one_checkpoint_with_an_inference_field_changed(tmp_path):
    """--set on one checkpoint: the same weights, the field changed, the rest of the metadata kept;
    with several, the mean gets the change."""
    import json

    src = tmp_path / "g.safetensors"
    model = saved_generator(src, seed=3, steps=700, composite=True, mouth_input=True)
    out = tmp_path / "gated.safetensors"
    assert cli([str(src), "--out", str(out), "--set", "copy_bias=0.5", "--set", "copy_gate=3"]) == 0
    again = checkpoints.load(out)
    cfg = again.model.config
    assert (cfg.copy_bias, cfg.copy_gate, cfg.decoder_channels) == (0.5, 3.0, model.config.decoder_channels)
    assert again.meta["steps"] == 700 and again.meta["trained_on"] == "test clips"
    assert json.loads(again.meta["config_changed"]) == {"copy_bias": 0.5, "copy_gate": 3}
    for k, v in model.state_dict().items():
        assert torch.equal(again.model.state_dict()[k], v), k
    second = tmp_path / "g2.safetensors"
    saved_generator(second, seed=4, steps=800, composite=True, mouth_input=True)
    both = tmp_path / "both.safetensors"
    assert cli([str(src), str(second), "--out", str(both), "--set", "copy_bias=0.5"]) == 0
    mean = checkpoints.load(both)
    assert mean.model.config.copy_bias == 0.5 and len(mean.meta["averaged_from"]) == 2
