"""``python -m marlin.probe``: linear probe / fine-tune on a labelled set the test builds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers_train import one_thread_fixture
from media import moving_face_frames, write_video

from marlin import Marlin
from marlin.probe import cli, evaluate, main, read_labels, roc_auc, split_indices
from marlin.training import TrainingError

S = 64
TINY = ["--n-frames", "8", "--stride", "4", "--cpu"]


_one_thread = one_thread_fixture()  # tiny models: one intra-op thread is fastest


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """16 short videos: two real face photos x two zoom levels, each on its own drifting path."""
    root = tmp_path_factory.mktemp("probe")
    (root / "videos").mkdir()
    rows, tags = [], []
    for i in range(16):
        photo, big = ("astronaut", "grace_hopper")[i % 2], (i // 2) % 2
        scale = (1.25 if big else 0.8) * S / 512

        def path(k, i=i, scale=scale):
            return S / 2 + 4 * np.sin(k / 3 + i), S / 2 + 3 * np.cos(k / 4 + i), scale

        write_video(root / "videos" / f"v{i:02d}.mp4", moving_face_frames(20, (S, S), photo, path))
        rows.append((f"videos/v{i:02d}.mp4", photo, big))
        tags.append(";".join([t for t, on in (("astronaut", photo == "astronaut"), ("close_up", big)) if on]))
    (root / "classes.csv").write_text("path,label\n" + "".join(f"{p},{c}\n" for p, c, _ in rows))
    (root / "tags.csv").write_text("path,label\n" + "".join(f"{p},{t}\n" for (p, _, _), t in zip(rows, tags)))
    (root / "cols.csv").write_text("path,astronaut,close_up\n" + "".join(
        f"{p},{int(c == 'astronaut')},{b}\n" for p, c, b in rows))
    torch.manual_seed(0)
    Marlin.from_config("vit_tiny", n_frames=8, img_size=S).save(root / "tiny.safetensors")
    return root


def test_linear_probe_multiclass_beats_chance(labelled, tmp_path, capsys):
    out = tmp_path / "probe"
    assert main(["--csv", str(labelled / "classes.csv"), "--checkpoint", str(labelled / "tiny.safetensors"),
                 "--out", str(out), "--cache", str(labelled / "cache"), "--val-fraction", "0.5",
                 "--epochs", "100", "--lr", "1e-3", *TINY]) == 0
    report = json.loads((out / "report.json").read_text())
    print(capsys.readouterr().out.strip())
    assert report["task"] == "multiclass" and report["n_heldout"] == 8 and report["chance_accuracy"] == 0.5
    assert report["accuracy"] >= 0.875 and report["auc"] >= 0.9
    assert len(list((labelled / "cache").glob("*.npy"))) == 16  # one feature file per video
    preds = (out / "predictions.csv").read_text().splitlines()
    assert preds[0] == "path,astronaut,grace_hopper" and len(preds) == 9
    assert set(torch.load(out / "probe.pt", weights_only=True)["state_dict"]) == {
        "head.mean", "head.std", "head.linear.weight", "head.linear.bias"}


@pytest.mark.parametrize("csv_name", ["tags.csv", "cols.csv"])
def test_multilabel_probe_from_cache(labelled, tmp_path, monkeypatch, csv_name):
    import marlin.features

    def no_encoder(*args, **kwargs):
        raise AssertionError("features should come from the cache")

    if (labelled / "cache").exists():  # filled by the multiclass test (same videos, same model)
        monkeypatch.setattr(marlin.features, "extract_video", no_encoder)
    out = tmp_path / "ml"
    assert main(["--csv", str(labelled / csv_name), "--multilabel", "--checkpoint",
                 str(labelled / "tiny.safetensors"), "--out", str(out), "--cache", str(labelled / "cache"),
                 "--val-fraction", "0.5", "--epochs", "100", "--lr", "3e-3", *TINY]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "multilabel" and report["classes"] == ["astronaut", "close_up"]
    assert report["accuracy"] >= report["chance_accuracy"] + 0.25 and report["auc"] >= 0.85


def test_finetune_trains_the_encoder(labelled, tmp_path):
    out = tmp_path / "ft"
    assert main(["--csv", str(labelled / "classes.csv"), "--finetune", "--checkpoint",
                 str(labelled / "tiny.safetensors"), "--out", str(out), "--val-fraction", "0.5",
                 "--epochs", "12", "--batch-size", "8", *TINY]) == 0  # the paper's lr 1e-4
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "finetune" and report["accuracy"] >= 0.75 and report["auc"] >= 0.9
    tuned = torch.load(out / "probe.pt", weights_only=True)["state_dict"]
    start = Marlin.from_file(labelled / "tiny.safetensors", with_decoder=False).state_dict()
    key = "encoder.blocks.0.attn.qkv.weight"
    assert not torch.equal(tuned[key], start[key])  # same key names as a Marlin state dict


# --------------------------------------------------------------------------- pure parts
def test_roc_auc_and_evaluate():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5, 0.5], [0, 1, 1]) == pytest.approx(0.5)  # ties count half
    assert np.isnan(roc_auc([0.2, 0.3], [1, 1]))
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
    assert evaluate(logits, np.array([0, 1, 1, 1]), False) == {"accuracy": 0.75, "auc": pytest.approx(1.0)}
    multi = evaluate(np.array([[1.0, -1.0], [-1.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 0.0]]), True)
    assert multi["accuracy"] == 0.75 and multi["auc"] == pytest.approx(1.0)  # label 2 has no positive


def test_labels_and_split(labelled, tmp_path):
    table = read_labels(labelled / "classes.csv")
    assert table.classes == ["astronaut", "grace_hopper"] and table.targets.tolist() == [0, 1] * 8
    train, held = split_indices(table, 0.25, seed=0)
    assert len(held) == 4 and sorted(table.targets[held].tolist()) == [0, 0, 1, 1]  # stratified
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(16))
    tags = read_labels(labelled / "tags.csv", multilabel=True)
    cols = read_labels(labelled / "cols.csv", multilabel=True)
    assert tags.classes == cols.classes and np.array_equal(tags.targets, cols.targets)
    split_csv = tmp_path / "split.csv"
    split_csv.write_text("path,label,split\n" + "".join(
        f"{p},{'ab'[i % 2]},{'val' if i < 2 else 'train'}\n" for i, p in enumerate(table.paths)))
    train, held = split_indices(read_labels(split_csv), 0.5, seed=0)
    assert held.tolist() == [0, 1]
    for text, match in [("video,label\nnope.mp4,a\n", "do not exist"), ("file,label\nx,a\n", "'path'"),
                        (f"path,label\n{table.paths[0]},a\n{table.paths[1]},a\n", "two classes")]:
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(TrainingError, match=match):
            read_labels(tmp_path / "bad.csv")


def test_cli_bad_input_one_line(labelled, tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("path,label\nmissing.mp4,a\n")
    code = cli(["--csv", str(tmp_path / "bad.csv"), "--variant", "vit_tiny", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and "missing.mp4" in err[0]
    assert not (tmp_path / "o").exists()
