"""experiments/char_lm/torch_peer.py: the PyTorch peer scores the text as seqjax does, and stops.

The time-to-loss comparison of README.md is only fair if both sides measure the same loss: the
peer's evaluation, on the weights of a torch model copied into ``seqjax.models.rnn_lm``, must
equal the seqjax evaluator's (same streams, same chunks, state carried). ``--stop_below`` ends
the peer after its first evaluation at or under the target, with ``steps_done`` in results.json.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from experiments.char_lm import batches  # pylint: disable=wrong-import-position
from experiments.char_lm import experiment  # pylint: disable=wrong-import-position
from experiments.char_lm import torch_peer  # pylint: disable=wrong-import-position
from seqjax import kernels  # pylint: disable=wrong-import-position
from seqjax.models import rnn_lm  # pylint: disable=wrong-import-position


def _seqjax_params(model: torch_peer.CharLstm, num_layers: int) -> dict:
  """The torch model's weights in ``rnn_lm``'s layout (torch's gate order i, f, g, o is ours)."""
  def arr(t):
    return jnp.asarray(t.detach().numpy())
  lstm = model.lstm
  return {"embed": {"embedding": arr(model.embed.weight)},
          "rnn": [{"fwd": {"w_ih": arr(getattr(lstm, f"weight_ih_l{k}")).T,
                           "w_hh": arr(getattr(lstm, f"weight_hh_l{k}")).T,
                           "b_ih": arr(getattr(lstm, f"bias_ih_l{k}")),
                           "b_hh": arr(getattr(lstm, f"bias_hh_l{k}"))}}
                  for k in range(num_layers)],
          "out": {"w": arr(model.head.weight).T, "b": arr(model.head.bias)}}


@pytest.mark.parametrize("native", ["off", "auto"])
def test_the_peer_scores_the_validation_text_as_seqjax_does(native):
  vocab, embed, hidden, layers = 7, 5, 16, 2
  torch.manual_seed(0)
  model = torch_peer.CharLstm(vocab, embed, hidden, layers, dropout=0.2)
  with torch.no_grad():  # larger weights than torch's init: the carried state and logits matter
    for p in [*model.lstm.parameters(), *model.head.parameters()]:
      p.mul_(4.0)
  spec = rnn_lm.Spec("lstm", vocab, embed, hidden, layers, 0.2)
  params = _seqjax_params(model, layers)
  assert _shapes(params) == _shapes(rnn_lm.init(jax.random.PRNGKey(0), spec))
  text = np.random.default_rng(1).integers(0, vocab, 1001).astype(np.int32)
  layout = batches.evaluation_streams(text, 3, 64)  # 1,000 predictions: padding in stream 3
  ours = experiment.make_evaluator(spec, kernels.Settings(native=None if native == "auto"
                                                          else False))(params, layout, 64)
  theirs = torch_peer.evaluate(model, layout, 64)
  assert ours[1] == theirs[1] == 1000
  assert ours[0] == pytest.approx(theirs[0], rel=1e-5)
  # Not uniform predictions: the weights were scaled up.
  assert abs(ours[0] / ours[1] - math.log(vocab)) > 0.05


def _shapes(tree) -> list:
  return [(path, leaf.shape) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]


def test_the_peer_stops_below_its_target(tmp_path, capsys):
  (tmp_path / "text").mkdir()
  rng = np.random.default_rng(0)
  (tmp_path / "text" / "input.txt").write_text(
      "".join(" ".join(rng.choice(["to", "be", "or", "not"], 6)) + "\n" for _ in range(200)))
  args = ["--workdir", str(tmp_path / "peer"), "--variant", "smoke", "--threads", "1",
          "--data_dir", str(tmp_path / "text"), "--num_steps", "6", "--eval_every", "2"]
  # A target above any loss: the first evaluation (step 2) stops it.
  assert torch_peer.main(args + ["--stop_below", "100"]) == 0
  results = json.loads((tmp_path / "peer" / "results.json").read_text())
  timeline = [json.loads(l) for l in (tmp_path / "peer" / "wall_time.jsonl").read_text().splitlines()]
  assert [r["step"] for r in timeline] == [2] and results["steps_done"] == 2
  assert results["best_eval_loss"] == timeline[0]["eval/loss"] <= 100
  assert "stopped at step 2" in capsys.readouterr().out
  # Without a target it runs all steps, evaluating every 2.
  assert torch_peer.main(args) == 0
  timeline = [json.loads(l) for l in (tmp_path / "peer" / "wall_time.jsonl").read_text().splitlines()]
  assert [r["step"] for r in timeline] == [2, 4, 6]
  assert json.loads((tmp_path / "peer" / "results.json").read_text())["steps_done"] == 6
  with pytest.raises(SystemExit, match="--eval_every must be positive"):
    torch_peer.main(args[:-2] + ["--eval_every", "-1"])
