"""Tests for captioning/evaluate.py's results folders (evaluate_workdir end to end:
tests/test_learning.py)."""

import pytest

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
