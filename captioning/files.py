"""Writing files so that nothing already written is lost: a reader, or a run killed mid-write,
sees the old file or the new one, never half of it. Pure Python."""

import json
import os


def write_text(path, text):
  """Writes `text` to `path` atomically (a temporary file beside it, then a rename)."""
  with open(path + ".tmp", "w", encoding="utf-8", newline="") as f:  # text as given (CSV: \r\n)
    f.write(text)
  os.replace(path + ".tmp", path)


def write_json(path, payload, indent=2):
  """`write_text` of `payload` as JSON (`indent=None`: compact)."""
  write_text(path, json.dumps(payload, indent=indent))
