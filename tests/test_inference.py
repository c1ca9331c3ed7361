"""Captioning image files with a trained workdir (captioning/inference.py, scripts/caption.py)."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from captioning import decoding
from captioning import experiment
from captioning import inference
from captioning import train
from captioning.data import datasets
import helpers

TINY = {
  "data.num_train": 64,
  "data.num_val": 8,
  "data.num_test": 8,
  "data.num_compositional": 8,
  "train.batch_size": 8,
  "train.num_steps": 2,
  "train.eval_every": 2,
  "train.checkpoint_every": 2,
  "eval.num_examples": 8,
  "eval.batch_size": 8,
  "eval.evaluators": {"perplexity": {}},  # captioning reads config.decode, not the evaluators
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("trained"))
  train.train_and_evaluate(helpers.load_config("smoke", **TINY), path)
  return path


def test_captions_files_of_any_kind_and_skips_what_cannot_be_read(workdir, tmp_path):
  config = experiment.load_config(workdir)
  split = datasets.create(config.data, config.seed).split("test")
  pixels = split.images.numpy(np.arange(3))
  folder = tmp_path / "photos"
  folder.mkdir()
  Image.fromarray(pixels[0]).save(folder / "scene0.png")  # lossless, at the model's size
  Image.fromarray(pixels[1]).resize((96, 64)).save(folder / "scene1_wide.jpg")
  Image.fromarray(pixels[2]).convert("P").save(folder / "scene2.gif")
  (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
  out = tmp_path / "attention"

  results = inference.caption_files(
    workdir,
    [str(folder / "*"), str(folder / "missing.png"), str(tmp_path / "nothing*.jpg")],
    attention_dir=str(out),
  )
  by_name = {os.path.basename(r.path): r for r in results}
  assert by_name["nothing*.jpg"].error == "no file matches this pattern"
  assert by_name["missing.png"].error == "missing_file"
  assert by_name["broken.jpg"].error in ("truncated_file", "undecodable")
  captioned = [r for r in results if r.error is None]
  assert sorted(os.path.basename(r.path) for r in captioned) == [
    "scene0.png",
    "scene1_wide.jpg",
    "scene2.gif",
  ]
  # The lossless file at the model's size is captioned exactly as the split's own pixels are.
  tokenizer, model = experiment.restore(workdir)[1:3]
  search = decoding.build_search(config.decode, model, tokenizer)
  expected = tokenizer.decode_batch(search(pixels[:1])["tokens"].numpy())[0]
  assert by_name["scene0.png"].caption == expected
  # One attention grid per captioned image: the input, then a panel per word (and <end>).
  assert sorted(os.listdir(out)) == sorted(
    f"{r.path.split('/')[-1]}.attention.png" for r in captioned
  )
  for r in captioned:
    panels = len(r.caption.split()) + r.finished + 1
    columns, rows = min(panels, 6), -(-panels // 6)
    width, height = Image.open(r.attention_png).size
    assert abs(width - 2.2 * columns * 80) <= 2 and abs(height - 2.4 * rows * 80) <= 2


def test_another_decoding_than_the_workdirs_is_used(workdir, tmp_path):
  config = experiment.load_config(workdir)
  pixels = datasets.create(config.data, config.seed).split("test").images.numpy(np.arange(1))
  Image.fromarray(pixels[0]).save(tmp_path / "a.png")
  tokenizer, model = experiment.restore(workdir)[1:3]
  for method, beam_size in (("greedy", None), ("beam", 2), ("sample", None)):
    got = inference.caption_files(
      workdir, [str(tmp_path / "a.png")], decode_method=method, beam_size=beam_size
    )
    decode = dict(config.decode, method=method, beam_size=beam_size or config.decode.beam_size)
    out = decoding.build_search(decode, model, tokenizer)(pixels)
    assert got[0].caption == tokenizer.decode_batch(out["tokens"].numpy())[0]
    assert got[0].log_prob == pytest.approx(float(out["log_prob"][0]), abs=1e-5)
    assert got[0].n_best == []  # one caption unless asked for more
  got = inference.caption_files(workdir, [str(tmp_path / "a.png")], beam_size=3, n_best=3)[0]
  decode = dict(config.decode, method="beam", beam_size=3, n_best=3)
  out = decoding.build_search(decode, model, tokenizer)(pixels)
  assert [c for c, *_ in got.n_best] == tokenizer.decode_batch(out["n_best_tokens"][0].numpy())
  assert got.n_best[0][:2] == (got.caption, pytest.approx(got.log_prob))
  scores = [score for _, _, score, _ in got.n_best]
  assert scores == sorted(scores, reverse=True)
  with pytest.raises(ValueError, match="n_best 4 needs method 'beam' with beam_size >= n_best"):
    inference.caption_files(workdir, [str(tmp_path / "a.png")], beam_size=2, n_best=4)


def run_script(*args, cwd):
  return subprocess.run(
    [sys.executable, os.path.join(helpers.ROOT, "scripts", "caption.py"), *args],
    cwd=cwd,
    env=dict(os.environ, PYTHONPATH=helpers.ROOT),
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_caption_script_prints_captions_and_reports_skipped_files(workdir, tmp_path):
  config = experiment.load_config(workdir)
  pixels = datasets.create(config.data, config.seed).split("test").images.numpy(np.arange(1))
  Image.fromarray(pixels[0]).save(tmp_path / "a.png")
  (tmp_path / "b.png").write_bytes(b"")
  result = run_script(f"--workdir={workdir}", "--decode_method=beam", "--beam_size=3",
                      "--n_best=3", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                      cwd=str(tmp_path))  # fmt: skip
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.splitlines()
  assert lines[0].startswith(f"{tmp_path / 'a.png'}\t")
  assert [line[:5] for line in lines[1:]] == ["  2.\t", "  3.\t"]  # the next best captions
  assert "(log p " in lines[1]
  assert f"skipped {tmp_path / 'b.png'}: empty_file" in result.stderr
  result = run_script(f"--workdir={tmp_path}", str(tmp_path / "a.png"), cwd=str(tmp_path))
  assert result.returncode != 0 and "not a training workdir" in result.stderr
  assert "Traceback" not in result.stderr
