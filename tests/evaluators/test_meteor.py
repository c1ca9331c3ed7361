"""Tests for the METEOR JVM's command (the scores themselves: tests/evaluators/test_coco_metrics.py,
which compares them with pycocoevalcap's own METEOR)."""

import subprocess
import types

from pycocoevalcap.meteor import meteor as pycocoevalcap_meteor

from captioning.evaluators import meteor


def test_the_command_is_pycocoevalcaps_with_jvm_options_only(monkeypatch):
  started = []

  def popen(command, **kwargs):
    started.append((command, kwargs["cwd"]))
    return types.SimpleNamespace(
      stdin=types.SimpleNamespace(close=lambda: None), kill=lambda: None, wait=lambda: 0
    )

  monkeypatch.setattr(subprocess, "Popen", popen)
  theirs = pycocoevalcap_meteor.Meteor()
  ours = meteor.FastStartMeteor()
  (their_command, their_cwd), (our_command, our_cwd) = started
  assert our_command == [their_command[0], *meteor.JVM_OPTIONS, *their_command[1:]]
  assert our_cwd == their_cwd
  assert all(option.startswith("-XX:") for option in meteor.JVM_OPTIONS)
  assert ours.meteor_cmd == our_command and not ours.lock.locked()
  del theirs  # pycocoevalcap's __del__ closes the fake process
