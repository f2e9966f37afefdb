"""``python -m experiments.counting`` end to end on the smoke variant: results.json and plots."""

import json

import numpy as np

import forced_devices



def test_smoke_run_writes_results_and_plots(tmp_path):
  workdir = tmp_path / "counting"
  proc = forced_devices.run_experiment("counting", workdir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"workdir: {workdir}" in proc.stdout
  assert f"results: {workdir / 'results.json'}" in proc.stdout
  results = json.loads((workdir / "results.json").read_text())
  config = json.loads((workdir / "config.json").read_text())
  assert results["step"] == config["num_steps"] == 30
  langs, cell_names = config["languages"].split(","), config["cells"].split(",")
  heads = config["heads"].split(",")
  main_rules = {"sets": {"sets"}, "softmax": {
      f"p>{t:g}{m}" for t in config["thresholds"] for m in ("", "/deterministic")}}
  # Each rule also comes split into its positive and its negatives half.
  expected_rules = {head: rules | {f"{r}:{part}" for r in rules
                                   for part in ("positive", "negatives")}
                    for head, rules in main_rules.items()}
  acceptance = json.loads((workdir / "acceptance.json").read_text())
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  first, last = records[0], records[-1]
  assert [r["step"] for r in records] == [10, 20, 30]
  network_losses = 0.0
  for lang in langs:
    for cell in cell_names:
      for head in heads:
        name = f"{lang}/{cell}/{head}"
        model = results["models"][name]
        assert set(model["limit"]) == expected_rules[head]
        assert len(model["final_train_loss"]) == config["num_seeds"]
        assert all(np.isfinite(model["final_train_loss"]))
        # Every network learnt something in 30 steps: its minibatch loss went down.
        metric = f"train/{lang}_{cell}_{head}_loss"
        assert last[metric] < first[metric], metric
        network_losses += last[metric]
        for rule, seeds in model["limit"].items():
          assert all(0 <= s <= model["tested_up_to_n"] for s in seeds)
          if ":" not in rule:  # passing needs both halves to pass
            for part in ("positive", "negatives"):
              assert all(s <= t for s, t in zip(seeds, model["limit"][f"{rule}:{part}"]))
            # A limit is where the first n fails in acceptance.json (n = 1, 2, ... per seed).
            rows = acceptance[name][rule]
            assert len(rows) == config["num_seeds"]
            assert all(len(r) == model["tested_up_to_n"] == config["eval_n_max"] for r in rows)
            assert [r.find("0") if "0" in r else len(r) for r in rows] == seeds, (name, rule)
          summary = results["summary"][f"{lang}/{rule}"][cell]
          assert summary["median"] == float(np.median(seeds))
          assert (summary["min"], summary["max"]) == (min(seeds), max(seeds))
          assert summary["capped"] == (max(seeds) >= model["tested_up_to_n"])
  # The step's loss is the sum of every network's: num_seeds times the sum of their seed means.
  np.testing.assert_allclose(last["train/loss"], config["num_seeds"] * network_losses, rtol=1e-5)
  assert results["final_train"]["train/loss"] == last["train/loss"]
  for key, verdict in results["ordering"].items():
    gru, lstm = (results["summary"][key][c]["seeds"] for c in ("gru", "lstm"))
    assert verdict["every_gru_below_every_lstm"] == (max(gru) < min(lstm))
  timing = results["seed_vmap_timing"]
  assert timing["vmap_s_per_step"] > 0 and timing["loop_s_per_step"] > 0
  np.testing.assert_allclose(timing["speedup"],
                             timing["loop_s_per_step"] / timing["vmap_s_per_step"])
  for lang in langs:
    assert (workdir / f"acceptance_{lang}.png").stat().st_size > 1000
  assert (workdir / "states_anbn.png").stat().st_size > 1000
