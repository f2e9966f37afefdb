"""MetricsWriter: metrics.jsonl records, a tqdm bar on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import io
import json
import logging as std_logging

from seqjax.train import metrics_log


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_records_one_line_per_split_and_step(tmp_path):
  writer = metrics_log.MetricsWriter(str(tmp_path), 10, console=io.StringIO())
  writer.write(5, {"train/loss": 0.5, "eval/mse": 0.25}, steps_per_sec=2.0)
  writer.close()
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert lines == [{"step": 5, "split": "train", "train/loss": 0.5, "steps_per_sec": 2.0},
                   {"step": 5, "split": "eval", "eval/mse": 0.25, "steps_per_sec": 2.0}]


def test_terminal_shows_a_progress_bar_with_evaluations_above_it(tmp_path):
  # Given a terminal and a run resumed at step 4 of 20,
  console = _Terminal()
  writer = metrics_log.MetricsWriter(str(tmp_path), 20, first_step=4, console=console)
  # when steps 8 and 12 are logged and an evaluation at 12,
  writer.write(8, {"train/loss": 0.75}, 3.0)
  writer.write(12, {"train/loss": 0.5}, 3.0)
  writer.write(12, {"eval/mse": 0.125}, 3.0)
  writer.close()
  # then the bar counts steps up to 12 of 20 with the latest loss, and the evaluation is a line.
  shown = console.getvalue()
  frames = shown.split("\r")
  assert "12/20" in frames[-1] and "train/loss=0.5" in frames[-1], frames[-1]
  assert any(f.startswith("4/20") or " 4/20" in f for f in frames), frames
  assert "12/20 eval/mse=0.125\n" in shown
  assert shown.endswith("\n")  # close() leaves the finished bar on its own line.


def test_without_a_terminal_it_logs_plain_lines(tmp_path, caplog):
  console = io.StringIO()
  writer = metrics_log.MetricsWriter(str(tmp_path), 20, console=console)
  with caplog.at_level(std_logging.INFO):
    writer.write(10, {"train/loss": 0.25, "train/accuracy": 0.5}, steps_per_sec=2.0)
  writer.close()
  assert console.getvalue() == ""
  assert "step 10/20 train/loss=0.25 2.0 steps/s ETA 0:00:05" in caplog.text


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metrics_log.MetricsWriter(str(tmp_path), 20, enabled=False, console=_Terminal())
  writer.write(1, {"train/loss": 1.0})
  writer.close()
  assert list(tmp_path.iterdir()) == []
