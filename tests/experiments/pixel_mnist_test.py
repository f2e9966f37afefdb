"""experiments/pixel_mnist: the IDX reader and builder (round trip, corrupt headers), the fixed
pixel permutation, the 9,000 / 1,000 split of the real test file, batches, and the smoke variant
end to end against a Python-loop RNN."""

import gzip
import json
import os

import numpy as np
import pytest

from experiments.pixel_mnist import config as pixel_config
from experiments.pixel_mnist import experiment
from experiments.pixel_mnist import mnist
from seqjax import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(REPO, "..", "shared", "data", "mnist")


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
  header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
  return header + array.astype(np.uint8).tobytes()


def _write(folder, name, data: bytes, gz: bool):
  path = os.path.join(folder, name + (".gz" if gz else ""))
  with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
    f.write(data)
  return path


def _images(n, seed):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8), rng.integers(0, 10, size=n)


def _folder(folder, n_test, n_train=0, gz=True):
  """IDX files of random images and labels in ``folder``; returns ``{split: (images, labels)}``."""
  made = {"test": _images(n_test, 1)}
  if n_train:
    made["train"] = _images(n_train, 2)
  for split, (images, labels) in made.items():
    image_name, label_name = mnist.FILES[split]
    _write(folder, image_name, _idx_bytes(images, mnist.IMAGE_MAGIC), gz)
    _write(folder, label_name, _idx_bytes(labels, mnist.LABEL_MAGIC), gz)
  return made


def test_builder_round_trips_pixels_and_labels(tmp_path):
  # Given train files stored plain and test files gzipped, in a folder of their own.
  source = tmp_path / "idx"
  source.mkdir()
  made = _folder(source, n_test=5, gz=True)
  made.update({"train": _images(3, 2)})
  _write(source, mnist.FILES["train"][0], _idx_bytes(made["train"][0], mnist.IMAGE_MAGIC), False)
  _write(source, mnist.FILES["train"][1], _idx_bytes(made["train"][1], mnist.LABEL_MAGIC), False)
  # When tfds prepares and reads them back.
  data = mnist.load(str(tmp_path / "tfds"), str(source))
  # Then every pixel and label is the one written, in file order, and "auto" picks the official
  # split because the train files are there.
  assert sorted(data) == ["test", "train"]
  for split, (images, labels) in made.items():
    np.testing.assert_array_equal(data[split][0], images)
    np.testing.assert_array_equal(data[split][1], labels)
  train_set, heldout, described = experiment.make_split(data, "auto", 1000)
  assert described["split"] == "official"
  np.testing.assert_array_equal(train_set[0], made["train"][0])
  np.testing.assert_array_equal(heldout[1], made["test"][1])


@pytest.mark.parametrize("corrupt,message", [
    (lambda b: (0x00000802).to_bytes(4, "big") + b[4:],
     r"magic 0x00000802, expected 0x00000803 \(unsigned bytes, 3 dimensions\)"),
    (lambda b: b[:8] + (27).to_bytes(4, "big") + b[12:], r"dimensions \[2, 27, 28\], expected "
                                                         r"\[n, 28, 28\]"),
    (lambda b: b[:4] + (3).to_bytes(4, "big") + b[8:],
     r"1568 data bytes after the header, but the dimensions \[3, 28, 28\] need 2352"),
    (lambda b: b[:-1], r"1567 data bytes after the header, but the dimensions \[2, 28, 28\] need"
                       r" 1568"),
    (lambda b: b[:10], r"10 bytes, shorter than the 16-byte IDX header"),
])
def test_corrupt_image_header_is_one_line_naming_the_file(tmp_path, corrupt, message):
  _folder(tmp_path, n_test=2)
  good = _idx_bytes(_images(2, 1)[0], mnist.IMAGE_MAGIC)
  _write(tmp_path, mnist.FILES["test"][0], corrupt(good), gz=True)
  with pytest.raises(ValueError, match="^t10k-images-idx3-ubyte.gz: " + message) as err:
    mnist.load(str(tmp_path / "tfds"), str(tmp_path))
  assert "\n" not in str(err.value)
  assert not (tmp_path / "tfds").exists()  # checked before tfds writes anything


def test_label_file_checks_and_missing_files(tmp_path):
  _folder(tmp_path, n_test=4, gz=False)
  labels = tmp_path / mnist.FILES["test"][1]
  labels.write_bytes(_idx_bytes(np.array([1, 2, 3]), mnist.LABEL_MAGIC))  # 3 labels, 4 images
  with pytest.raises(ValueError, match="^t10k-images-idx3-ubyte has 4 images but "
                                       "t10k-labels-idx1-ubyte has 3 labels$"):
    mnist.load(str(tmp_path / "tfds"), str(tmp_path))
  labels.write_bytes(_idx_bytes(np.array([1, 2, 12, 3]), mnist.LABEL_MAGIC))
  with pytest.raises(ValueError, match="label 12 at index 2 is not a digit"):
    mnist.read_split(tmp_path / mnist.FILES["test"][0], labels)
  labels.unlink()
  with pytest.raises(FileNotFoundError, match="has no t10k-labels-idx1-ubyte"):
    mnist.load(str(tmp_path / "tfds"), str(tmp_path))


def test_permutation_is_a_fixed_bijection_drawn_from_the_seed():
  first, again, other = (experiment.pixel_permutation(s) for s in (0, 0, 1))
  np.testing.assert_array_equal(np.sort(first), np.arange(784))  # every pixel exactly once
  np.testing.assert_array_equal(first, again)
  assert np.mean(first != other) > 0.9
  assert np.mean(first != np.arange(784)) > 0.9  # really shuffled
  # Step k of the permuted sequence is pixel order[k] of the row-major image, scaled to [0, 1].
  images, _ = _images(2, 3)
  xs = experiment.to_sequences(images, first)
  assert xs.shape == (2, 784, 1) and xs.dtype == np.float32
  for k in (0, 1, 400, 783):
    row, col = divmod(int(first[k]), 28)
    assert xs[1, k, 0] == np.float32(images[1, row, col] / 255.0)
  np.testing.assert_array_equal(experiment.to_sequences(images)[0, 28:56, 0], images[0, 1].astype(np.float32) / 255.0)


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="the shared MNIST test files are absent")
def test_nine_thousand_one_thousand_split_of_the_real_test_file():
  folder = os.path.realpath(SHARED)
  images, labels = mnist.read_split(*mnist.local_files(folder)["test"])
  assert images.shape == (10000, 28, 28)
  np.testing.assert_array_equal(np.bincount(labels), [980, 1135, 1032, 1010, 982, 892, 958,
                                                      1028, 974, 1009])
  (train_x, train_y), (held_x, held_y), described = experiment.make_split(
      {"test": (images, labels)}, "auto", 1000)
  assert described["split"] == "test_only" and len(train_y) == 9000 and len(held_y) == 1000
  # The held-out images are the file's last 1,000 records, read here straight from the bytes.
  with gzip.open(os.path.join(folder, "t10k-images-idx3-ubyte.gz"), "rb") as f:
    raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
  np.testing.assert_array_equal(held_x.reshape(-1, 784), raw[9000:])
  np.testing.assert_array_equal(train_x.reshape(-1, 784), raw[:9000])
  # Disjoint: no held-out image occurs among the training images.
  train_rows = {row.tobytes() for row in raw[:9000]}
  assert not any(row.tobytes() in train_rows for row in raw[9000:])
  with pytest.raises(ValueError, match="needs train-images-idx3-ubyte"):
    experiment.make_split({"test": (images, labels)}, "official", 1000)


def test_each_epoch_visits_every_training_image_once():
  steps = [experiment.epoch_batch(7, s, 50, 10) for s in range(10)]  # two epochs of 5 steps
  for epoch in (steps[:5], steps[5:]):
    np.testing.assert_array_equal(np.sort(np.concatenate(epoch)), np.arange(50))
  assert not np.array_equal(np.concatenate(steps[:5]), np.concatenate(steps[5:]))
  np.testing.assert_array_equal(experiment.epoch_batch(7, 3, 50, 10), steps[3])  # pure in step


def _numpy_rnn_logits(params, xs):
  """A tanh RNN and linear readout, one Python step at a time (``xs: [b, t, 1]``)."""
  p = {k: np.asarray(v, np.float64) for k, v in params["cell"].items()}
  h = np.zeros((xs.shape[0], p["w_hh"].shape[0]))
  for t in range(xs.shape[1]):
    h = np.tanh(xs[:, t] @ p["w_ih"] + p["b_ih"] + h @ p["w_hh"] + p["b_hh"])
  return h @ np.asarray(params["w_out"], np.float64) + np.asarray(params["b_out"])


def test_smoke_variant_end_to_end(tmp_path):
  source = tmp_path / "idx"
  source.mkdir()
  made = _folder(source, n_test=320)
  config = pixel_config.get_config("smoke")
  config.data_dir = str(source)
  workdir = str(tmp_path / "run")
  exp = experiment.make_experiment(config, workdir)
  result = train.run(exp, config, workdir)
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["final_accuracy"] == result["final_accuracy"]
  assert result["step"] == 12 and result["data"]["split"] == "test_only"
  assert (result["train_images"], result["heldout_images"]) == (200, 100)
  assert result["epochs"] == pytest.approx(12 * 20 / 200)
  evals = [r for r in train.read_metrics(workdir) if r["split"] == "eval"]
  assert [r["step"] for r in evals] == [6, 12]
  assert result["final_accuracy"] == evals[-1]["eval/accuracy"]
  assert os.path.getsize(os.path.join(workdir, "curves.png")) > 1000
  # The held-out numbers of evaluate() are those of a Python-loop tanh RNN over the last 100
  # images of the file (scaled pixels, row by row).
  import jax  # pylint: disable=import-outside-toplevel
  params = jax.tree.map(np.asarray, exp.init(jax.random.PRNGKey(3)))
  # Spectral radius about 1.1: far from zero after 784 steps, short of chaos (at 1.7 float32
  # rounding grows over 784 steps until the losses differ in the fourth digit, by CPU model).
  params["cell"]["w_hh"] = params["cell"]["w_hh"] * 2.0
  xs = made["test"][0][220:].reshape(100, 784, 1) / 255.0
  ys = made["test"][1][220:]
  logits = _numpy_rnn_logits(params, xs)
  log_p = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
  got = exp.evaluate(params, 0)
  assert got["eval/accuracy"] == pytest.approx(np.mean(logits.argmax(1) == ys))
  assert got["eval/loss"] == pytest.approx(-np.mean(log_p[np.arange(100), ys]), rel=1e-5)


def _finished_run(folder, cell, step, final, best, chrono_t_max=0, permuted=False):
  """A workdir as a finished run leaves it: results.json, config.json and metrics.jsonl."""
  os.makedirs(folder)
  data = {"split": "test_only", "train": "test images 0-8999", "heldout": "test images 9000-9999"}
  result = {"cell": cell, "hidden_size": 128, "permuted": permuted, "data": data,
            "train_images": 9000, "heldout_images": 1000, "final_accuracy": final,
            "best_accuracy": best, "best_step": step, "train_seconds": 600.0, "step": step}
  config = {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 100, "grad_clip_norm": 1.0,
            "chrono_t_max": chrono_t_max}
  for name, record in (("results.json", result), ("config.json", config)):
    with open(os.path.join(folder, name), "w") as f:
      json.dump(record, f)
  with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
    f.write(json.dumps({"step": step, "split": "train", "train/loss": 1.0}) + "\n")
    f.write(json.dumps({"step": step, "split": "eval", "eval/accuracy": final,
                        "eval/loss": 1.0}) + "\n")


def test_table_rows_name_chrono_runs_and_count_epochs(tmp_path):
  from experiments.pixel_mnist import table  # pylint: disable=import-outside-toplevel
  plain, chrono = str(tmp_path / "pm-lstm"), str(tmp_path / "pm-lstm-chrono")
  _finished_run(plain, "lstm", 1260, 0.212, 0.231)
  _finished_run(chrono, "lstm", 10800, 0.95, 0.96, chrono_t_max=784)
  with open(chrono + ".log", "w") as f:
    f.write("start run 1000\nend rc=0 1600\nstart run 2000\nend rc=0 2300\n")
  out = str(tmp_path / "out")
  table.main(["--out", out, "--hardware", "a CPU", "--date", "2026-12-05", plain, chrono])
  with open(os.path.join(out, "table.md")) as f:
    lines = f.read().splitlines()
  assert lines[2] == ("| lstm | row by row | 128 | 21.2% / 23.1% | 1260 (14.0) | 10 min | n/a | "
                      "98.2% (Arjovsky et al. 2016 (128 units)) |")
  assert lines[3].startswith("| lstm | row by row, chrono init | 128 | 95.0% / 96.0% | "
                             "10800 (120.0) | 10 min | 15 min |")
  with open(os.path.join(out, "results.json")) as f:
    rows = json.load(f)["runs"]
  assert [r["wall_seconds"] for r in rows] == [None, 900.0]
  assert table.legend_names(rows) == ["lstm", "lstm (chrono)"]
  # Two runs of one kind in one plot are told apart by their workdirs.
  assert table.legend_names([rows[0], {**rows[0], "run": "pm-lstm-2"}, rows[1]]) == [
      "lstm [pm-lstm]", "lstm [pm-lstm-2]", "lstm (chrono) [pm-lstm-chrono]"]
  assert os.path.getsize(os.path.join(out, "curves.png")) > 1000
