"""Tests for captioning/evaluate.py's results folders (evaluate_workdir end to end:
tests/test_learning.py)."""

import os
import subprocess
import sys

import pytest

from captioning import decode_options
from captioning import evaluate
import helpers


@pytest.fixture
def decode():
  config = helpers.load_config("smoke")
  assert (config.decode.method, config.decode.beam_size) == ("beam", 5)
  return config.decode


def test_the_workdirs_own_decoding_writes_to_the_splits_folder(decode):
  assert evaluate.output_name("test", decode) == ("beam", 5, "test")
  assert evaluate.output_name("val", decode, "beam", 5) == ("beam", 5, "val")


def test_another_decoding_gets_a_folder_of_its_own(decode):
  method, _, folder = evaluate.output_name("test", decode, "greedy")
  assert (method, folder) == ("greedy", "test_greedy")
  assert evaluate.output_name("test", decode, "sample")[2] == "test_sample"
  assert evaluate.output_name("test", decode, beam_size=3) == ("beam", 3, "test_beam3")
  with decode.unlocked():
    decode.method = "greedy"
  assert evaluate.output_name("compositional", decode, "beam")[2] == "compositional_beam5"


def test_the_scripts_decodings_are_the_librarys_and_a_wrong_one_is_a_clear_error():
  result = subprocess.run(
    [sys.executable, os.path.join(helpers.ROOT, "scripts", "evaluate.py"), "--decode_method=x"],
    env=dict(os.environ, PYTHONPATH=helpers.ROOT),
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "should be one of <" + "|".join(decode_options.METHODS) + ">" in result.stderr
