"""The SavedModel export (captioning/export.py, scripts/export.py): it loads and captions with
TensorFlow alone, exactly as inference.caption_files does with the workdir."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image
import pytest

from captioning import experiment
from captioning import export
from captioning import inference
from captioning import train
from captioning.data import datasets
from captioning.data import tokenizer as tokenizer_lib
import helpers

# Twenty steps, so that captions have words (after two, every caption is empty).
TINY = {
  "data.num_train": 64,
  "data.num_val": 8,
  "data.num_test": 8,
  "data.num_compositional": 8,
  "train.batch_size": 8,
  "train.num_steps": 20,
  "train.eval_every": 20,
  "train.checkpoint_every": 20,
  "train.log_every": 20,
  "eval.evaluators": {},
  "train.best_metric": "",  # no evaluators: no best checkpoint
}

# Run with the package unimportable: `import captioning` anywhere in loading fails.
_LOAD_AND_CAPTION = textwrap.dedent(
  """
  import json, sys
  sys.modules["captioning"] = None
  import tensorflow as tf

  exports, paths = json.loads(sys.argv[1]), json.loads(sys.argv[2])
  images = tf.constant([open(p, "rb").read() for p in paths])
  results = {}
  for name, folder in exports.items():
    serve = tf.saved_model.load(folder).signatures["serving_default"]
    out = serve(images=images)
    results[name] = {
      "caption": [c.decode() for c in out["caption"].numpy()],
      "log_prob": out["log_prob"].numpy().tolist(),
      "finished": out["finished"].numpy().tolist(),
      "types": {k: [v.dtype.name, v.shape.rank] for k, v in out.items()},
    }
  try:
    serve(images=tf.constant([b"not an image"]))
    results["unreadable"] = None
  except tf.errors.InvalidArgumentError as error:
    results["unreadable"] = type(error).__name__
  results["captioning_imported"] = sys.modules["captioning"] is not None
  print(json.dumps(results))
  """
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("trained"))
  train.train_and_evaluate(helpers.load_config("smoke", **TINY), path)
  return path


def photos(workdir, folder):
  """A JPEG and a PNG of test scenes, neither at the model's image size."""
  config = experiment.load_config(workdir)
  pixels = datasets.create(config.data, config.seed).split("test").images.numpy(np.arange(2))
  paths = [os.path.join(folder, "wide.jpg"), os.path.join(folder, "tall.png")]
  Image.fromarray(pixels[0]).resize((80, 48)).save(paths[0], quality=95)
  Image.fromarray(pixels[1]).resize((40, 56)).save(paths[1])
  return paths


def run_script(*args, cwd):
  return subprocess.run(
    [sys.executable, os.path.join(helpers.ROOT, "scripts", "export.py"), *args],
    cwd=cwd,
    env=dict(os.environ, PYTHONPATH=helpers.ROOT),
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_exported_model_captions_as_caption_files_without_the_package(workdir, tmp_path):
  paths = photos(workdir, str(tmp_path))
  exports = {"greedy": str(tmp_path / "greedy"), "beam": str(tmp_path / "beam")}
  info = export.export(workdir, exports["greedy"], decode_method="greedy")
  assert (info["step"], info["decode"]["method"]) == (20, "greedy")
  assert (info["image_size"], info["resize_mode"]) == (32, "crop")
  # The script writes the other one.
  result = run_script(f"--workdir={workdir}", f"--output={exports['beam']}",
                      "--decode_method=beam", "--beam_size=2", cwd=str(tmp_path))  # fmt: skip
  assert result.returncode == 0, result.stderr[-2000:]
  assert "Exported step 20 (beam, beam size 2" in result.stdout
  with open(os.path.join(exports["beam"], export.INFO_FILE)) as f:
    assert json.load(f)["decode"]["beam_size"] == 2

  # A fresh process that cannot import the package, outside the repository.
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  result = subprocess.run(
    [sys.executable, "-c", _LOAD_AND_CAPTION, json.dumps(exports), json.dumps(paths)],
    cwd=str(elsewhere),
    env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])
  assert served["captioning_imported"] is False
  assert served["unreadable"] == "InvalidArgumentError"

  for name, beam_size in (("greedy", None), ("beam", 2)):
    got = served[name]
    assert got["types"] == {
      "caption": ["string", 1],
      "log_prob": ["float32", 1],
      "finished": ["bool", 1],
      "tokens": ["int32", 2],
      **({"score": ["float32", 1]} if "score" in got["types"] else {}),
    }
    expected = inference.caption_files(workdir, paths, decode_method=name, beam_size=beam_size)
    assert [r.error for r in expected] == [None, None]
    assert got["caption"] == [r.caption for r in expected]
    assert any(got["caption"]), "captions without words test little"
    np.testing.assert_allclose(got["log_prob"], [r.log_prob for r in expected], atol=1e-4)
    assert got["finished"] == [r.finished for r in expected]


def test_detokenize_gives_the_tokenizers_strings():
  tokenizer = tokenizer_lib.Tokenizer([*tokenizer_lib.SPECIAL_TOKENS, "a", "red", "circle", ","])
  ids = np.random.RandomState(0).randint(-1, tokenizer.vocab_size + 2, size=(64, 7))
  ids[:4] = [[1, 4, 5, 2, 4, 0, 0], [4, 3, 7, 6, 0, 5, 5], [2, 4, 4, 4, 4, 4, 4], [4] * 7]
  special = dict(start_id=tokenizer.start_id, end_id=tokenizer.end_id, pad_id=tokenizer.pad_id)
  got = export.detokenize(ids, tokenizer.vocabulary, **special).numpy()
  assert [c.decode() for c in got] == tokenizer.decode_batch(ids)
  assert got[0] == b"a red" and got[1] == b"a <unk> , circle"


def test_refuses_a_wrong_workdir_and_keeps_what_is_in_the_output(workdir, tmp_path):
  with pytest.raises(FileNotFoundError, match="not a training workdir"):
    export.export(str(tmp_path), str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")
  taken = tmp_path / "taken"
  taken.mkdir()
  (taken / "notes.txt").write_text("mine")
  for overwrite in (False, True):  # --overwrite replaces only a previous export
    with pytest.raises(FileExistsError, match="not empty"):
      export.export(workdir, str(taken), overwrite=overwrite)
  assert os.listdir(taken) == ["notes.txt"]

  # A previous export is replaced whole, and only with overwrite.
  previous = tmp_path / "previous"
  previous.mkdir()
  (previous / "saved_model.pb").write_bytes(b"old")
  (previous / "stale.txt").write_text("old")
  with pytest.raises(FileExistsError, match="--overwrite"):
    export.export(workdir, str(previous), decode_method="greedy")
  export.export(workdir, str(previous), decode_method="greedy", overwrite=True)
  assert "stale.txt" not in os.listdir(previous)
  assert (previous / "saved_model.pb").read_bytes() != b"old"
  assert not [p for p in os.listdir(tmp_path) if p.startswith("previous.")]  # no staging left

  result = run_script(f"--workdir={tmp_path}", f"--output={tmp_path / 'out'}", cwd=str(tmp_path))
  assert result.returncode != 0 and "error: " in result.stderr
  assert "not a training workdir" in result.stderr and "Traceback" not in result.stderr
  result = run_script(f"--workdir={workdir}", f"--output={taken}", cwd=str(tmp_path))
  assert result.returncode != 0 and "error: " in result.stderr and "not empty" in result.stderr
  assert "Traceback" not in result.stderr and os.listdir(taken) == ["notes.txt"]
