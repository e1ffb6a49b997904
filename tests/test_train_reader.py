"""``python -m lipsync.train_reader`` and the reader's loss in ``python -m lipsync.train --reader``."""

from __future__ import annotations

import pytest
import torch
from helpers_train import full_and_resumed, metrics, one_thread_fixture
from test_datasets import talking_clips

from lipsync import checkpoints
from lipsync.data.datasets import OpeningDataset
from lipsync.models import OpeningReader, OpeningReaderConfig, create_model
from lipsync.train import main as train_generator_main
from lipsync.train_reader import cli, main
from lipsync.training import single_loop
from lipsync.training.reader_loop import augment, gaussian_blur

_one_thread = one_thread_fixture()

SMALL = ["--set", "width=8", "--set", "face_size=[24,48]"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four identities (one for val) whose drawn mouth opening the landmarks measure."""
    root = tmp_path_factory.mktemp("readerdata")
    talking_clips(root, n=4, n_frames=60, size=48, landmarks=True)
    return root


def test_dataset_gives_single_frames_with_their_measured_opening(data):
    ds = OpeningDataset(data, ["talk0", "talk1"], face_size=(24, 48))
    item = ds[(1, 5)]
    assert item["lower"].shape == (3, 24, 48) and 0 <= item["frame"] < 60
    assert torch.equal(item["lower"], ds[(1, 5)]["lower"])  # the seed fixes the frame
    frames = {ds[(0, s)]["frame"] for s in range(30)}
    assert len(frames) > 10
    # the opening is the landmark measure of that frame: 0.6 x the drawn opening in [0, 1]
    openings = torch.stack([ds[(0, s)]["opening"] for s in range(40)])
    assert 0 <= float(openings.min()) < 0.1 and 0.4 < float(openings.max()) <= 0.61
    assert ds[0]["frame"] == 30


def test_dataset_without_landmarks_is_a_clear_error(tmp_path):
    from marlin.data import DataError

    talking_clips(tmp_path, n=2, n_frames=20, size=32)
    with pytest.raises(DataError, match="face-mesh landmarks"):
        OpeningDataset(tmp_path, ["talk0", "talk1"])


def test_blur_and_augment():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 24, 48)
    sharp = gaussian_blur(x, torch.full((4,), 0.05))
    torch.testing.assert_close(sharp, x, atol=1e-4, rtol=0)  # a tiny sigma changes nothing
    soft = gaussian_blur(x, torch.tensor([0.05, 0.7, 1.2, 2.0]))
    rough = [float((s[:, :, 1:] - s[:, :, :-1]).abs().mean()) for s in soft]
    assert rough == sorted(rough, reverse=True)  # more blur, less pixel-to-pixel change
    assert abs(float(soft.mean()) - float(x.mean())) < 0.01  # blurring keeps the brightness
    out = augment(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    assert torch.equal(out, augment(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(out, augment(x, torch.Generator().manual_seed(2)))


def test_reader_learns_the_drawn_opening(data, tmp_path):
    out = tmp_path / "run"
    assert main(["--data", str(data), "--out", str(out), "--cpu", *SMALL, "--steps", "200",
                 "--batch-size", "32", "--val-samples", "64", "--eval-every", "100", "--warmup-steps", "20",
                 "--log-every", "20", "--save-every", "100"]) == 0
    logged = metrics(out)
    # the held-out identity's opening, read from pixels (chance: r ~ 0, RMSE ~ the spread, 0.2)
    assert logged[(200, "val/r")] > 0.9 and logged[(200, "val/r_blur")] > 0.8
    assert logged[(200, "val/rmse")] < 0.5 * logged[(0, "val/rmse")]
    assert logged[(200, "train/loss")] < 0.5 * logged[(20, "train/loss")]
    loaded = checkpoints.load(out / "reader.safetensors", kind="opening_reader")
    assert isinstance(loaded.model, OpeningReader) and loaded.model.face_size == (24, 48)
    assert loaded.meta["steps"] == 200 and loaded.meta["val_r"] == pytest.approx(logged[(200, "val/r")])


def test_reader_resume_is_exact(data, tmp_path, monkeypatch):
    args = ["--data", str(data), "--cpu", *SMALL, "--steps", "6", "--batch-size", "8", "--val-samples", "8",
            "--eval-every", "3", "--save-every", "2", "--log-every", "1", "--warmup-steps", "2"]
    full, cut = full_and_resumed(main, single_loop, args, tmp_path, monkeypatch, at=3)
    for key in [(6, "train/loss"), (6, "val/rmse"), (6, "val/r")]:
        assert cut[key] == pytest.approx(full[key], rel=1e-5), key


def test_bad_input_gives_one_line_errors(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli(["--data", str(data), "--out", str(tmp_path / "o"), "--lr", "0"])
    assert e.value.code == 2 and "--lr > 0" in capsys.readouterr().err
    bare = tmp_path / "bare"
    talking_clips(bare, n=2, n_frames=20, size=32)
    assert cli(["--data", str(bare), "--out", str(tmp_path / "o"), "--cpu", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "face-mesh landmarks" in err[0]
    assert not (tmp_path / "o" / "reader.safetensors").exists()


def test_generator_read_loss_uses_the_frozen_reader(data, tmp_path, capsys):
    """--reader adds the documented term; the reader stays frozen and out of the training state."""
    torch.manual_seed(0)
    reader = OpeningReader(OpeningReaderConfig(width=8, face_size=(24, 48)))
    path = checkpoints.save(tmp_path / "reader.safetensors", reader.eval())
    before = {k: v.clone() for k, v in reader.state_dict().items()}
    out = tmp_path / "gen"
    args = ["--data", str(data), "--cpu", "--val-samples", "1", "--batch-size", "2",
            "--model", "marlin_lip_tiny", "--set", "img_size=48", "--set", "encoder_init=random",
            "--disc-wt", "0", "--sample-every", "0",
            "--log-every", "1", "--steps", "2", "--mouth-wt", "2", "--train-frames", "3"]
    assert train_generator_main([*args, "--out", str(out), "--reader", str(path), "--reader-wt", "0.5"]) == 0
    logged = metrics(out)
    read, l1, mouth = logged[(2, "train/read")], logged[(2, "train/l1")], logged[(2, "train/mouth")]
    assert read > 0
    # no expert, no GAN: loss = L1 + mouth_wt * mouth + reader_wt * read
    assert logged[(2, "train/loss")] == pytest.approx(l1 + 2 * mouth + 0.5 * read, rel=1e-4)
    state = torch.load(out / "state.pt", weights_only=True)
    assert not any("reader" in name for name in state["models"])
    again = checkpoints.load(path).model.state_dict()
    assert all(torch.equal(again[k], before[k]) for k in before)
    # the read term reaches the generator: its gradient differs from the run without it
    torch.manual_seed(0)
    gen = create_model("marlin_lip_tiny", img_size=48, encoder_init="random")
    faces, mels = torch.rand(1, 6, 16, 48, 48), torch.randn(1, 16, 1, 80, 16)
    pred = gen(faces, mels, frames=torch.tensor([[0, 1, 2]]))
    from lipsync.training.common import lower_half

    said = reader(lower_half(pred, reader.face_size).transpose(1, 2).flatten(0, 1))
    said.sum().backward()
    grads = [p.grad for p in gen.parameters() if p.requires_grad and p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    # a checkpoint of another kind is a one-line error
    expert = checkpoints.save(tmp_path / "gen.safetensors", gen)
    from lipsync.train import cli as train_cli

    capsys.readouterr()
    assert train_cli([*args, "--out", str(tmp_path / "bad"), "--reader", str(expert)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "opening_reader" in err[0]
    assert not (tmp_path / "bad" / "generator.safetensors").exists()


def test_generated_folders_are_read_with_the_data(data, tmp_path, monkeypatch, capsys):
    """--generated DATA: a second preprocessed folder (e.g. a generator's dubs) joins each split."""
    from lipsync.data.datasets import ClipSetUnion
    from lipsync.training import reader_loop

    dubs = tmp_path / "dubs"
    talking_clips(dubs, n=2, n_frames=30, size=48, landmarks=True)
    (dubs / "train.txt").write_text("talk0\n")
    (dubs / "val.txt").write_text("talk1\n")
    a = OpeningDataset(data, ["talk0", "talk1"], face_size=(24, 48))
    b = OpeningDataset(dubs, face_size=(24, 48))
    union = ClipSetUnion([a, b])
    assert len(union) == 3
    assert torch.equal(union[(2, 7)]["lower"], b[(0, 7)]["lower"])
    assert torch.equal(union[1]["lower"], a[1]["lower"])
    with pytest.raises(IndexError):
        union[3]
    seen = {}

    def capture(cfg, acc, run):
        seen["train"] = len(run.train_ds)
        return {}

    monkeypatch.setattr(reader_loop, "run_single_model", capture)
    assert main(["--data", str(data), "--generated", str(dubs), "--out", str(tmp_path / "o"), "--cpu",
                 *SMALL, "--steps", "1"]) == 0
    alone = len(OpeningDataset(data, split="train", face_size=(24, 48)))
    assert seen["train"] == alone + 1
    with pytest.raises(SystemExit) as e:
        cli(["--data", str(data), "--generated", str(tmp_path / "none"), "--out", str(tmp_path / "o2")])
    assert e.value.code == 2 and "--generated" in capsys.readouterr().err


def test_mouth_reference_training_reads_the_references_openings(data, tmp_path, capsys):
    """A mouth_reference generator is told what the frozen reader reads in each reference frame
    (even with --reader-wt 0, so no read term), which trains its reference biases; it needs --reader."""
    from lipsync.training.generator_eval import extra_inputs, reference_openings

    torch.manual_seed(0)
    reader = OpeningReader(OpeningReaderConfig(width=8, face_size=(24, 48))).eval()
    path = checkpoints.save(tmp_path / "reader.safetensors", reader)
    out = tmp_path / "gen"
    args = ["--data", str(data), "--cpu", "--val-samples", "1", "--batch-size", "2",
            "--model", "marlin_lip_tiny", "--set", "img_size=48", "--set", "encoder_init=random",
            "--set", "mouth_input=true", "--set", "mouth_reference=true", "--opening-wt", "1",
            "--disc-wt", "0", "--sample-every", "2", "--lr", "1e-2",
            "--log-every", "1", "--steps", "2", "--train-frames", "3"]
    assert train_generator_main([*args, "--out", str(out), "--reader", str(path), "--reader-wt", "0"]) == 0
    assert (2, "train/read") not in metrics(out)  # no read term at weight 0
    assert (out / "samples" / "step_0000002.mp4").exists()  # dubbed as inference does, openings per frame
    model = checkpoints.load(out / "generator.safetensors").model
    assert model.config.mouth_reference
    assert all(b.weight.abs().sum() > 0 for b in model.reference_bias)  # moved from their zero start
    # what training gives it: the reader's reading of each reference frame's lower half
    faces = torch.rand(2, 6, 16, 48, 48)
    got = extra_inputs(model, {"faces": faces}, torch.device("cpu"), reader)["reference_opening"]
    assert got.shape == (2, 16)
    lower = faces[:, 3:6, :, 24:].transpose(1, 2).flatten(0, 1)  # a 48 px face's lower half is (24, 48)
    torch.testing.assert_close(got, reader(lower).reshape(2, 16))
    torch.testing.assert_close(reference_openings(reader, faces), got)
    from lipsync.train import cli as train_cli

    capsys.readouterr()
    assert train_cli([*args, "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mouth_reference needs --reader" in err[0]
