"""Outer loop on real rows: it learns, resumes bitwise, stops cleanly on NaN, and evaluates."""

import json
import os
import signal

import distill_jax
import jax
import numpy as np
import optax
import pytest

from distill_jax import checkpoint, config, data, distill, evaluate, experiment, main, signals, synthetic
from distill_jax.errors import UserError
from configs import default
from conftest import tiny_cli_config
from fault_cases import FAULTS


def _learned(workdir):
  return checkpoint.restore_state(checkpoint.manager(os.path.join(workdir, "checkpoints"), create=False))


def test_resume_is_bitwise_identical(tmp_path):
  full, part = tmp_path / "full", tmp_path / "part"
  main.run(tiny_cli_config(tmp_path), str(full))
  main.run(tiny_cli_config(tmp_path, **{"outer.steps": 2}), str(part))  # "crash" after step 2
  main.run(tiny_cli_config(tmp_path), str(part))  # resumes from the step-2 checkpoint
  a, b = _learned(str(full)), _learned(str(part))
  assert int(a["state"]["step"]) == int(b["state"]["step"]) == 4
  for x, y in zip(jax.tree_util.tree_leaves(a["state"]), jax.tree_util.tree_leaves(b["state"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  lines = [json.loads(l) for l in open(part / "metrics.jsonl")]
  assert [l["step"] for l in lines] == [1, 2, 3, 4]


def test_distillation_changes_the_set_and_step_sizes(tmp_path):
  cfg = tiny_cli_config(tmp_path)
  exp = experiment.setup(cfg)
  _, _, step_fn, ckpt = distill.make_problem(exp)
  x0 = np.asarray(ckpt["state"]["learned"]["data"]["x"]).copy()
  lr0 = np.asarray(ckpt["state"]["learned"]["lr"]).copy()
  state, static, real = ckpt["state"], ckpt["static"], exp.device_split(exp.train)
  losses = []
  for _ in range(3):
    state, m = step_fn(state, static, real)
    assert bool(m["finite"])
    losses.append(float(m["meta_loss"]))
  assert np.all(np.isfinite(losses))
  assert np.abs(np.asarray(state["learned"]["data"]["x"]) - x0).max() > 0
  assert np.abs(np.asarray(state["learned"]["lr"]) - lr0).max() > 0
  assert int(state["step"]) == 3


def test_the_meta_loss_can_score_only_long_training_rows():
  lengths = np.array([3, 12, 5, 20, 16])
  mask = (np.arange(24)[None] < lengths[:, None]).astype(np.int32)
  train = data.Split(mask * 7, mask, np.array([0, 1, 0, 1, 1], np.int32), list("abcde"))
  assert distill.meta_loss_rows(train, 0) is train
  kept = distill.meta_loss_rows(train, 12)
  assert kept.texts == ["b", "d", "e"] and kept.attention_mask.sum(axis=1).tolist() == [12, 20, 16]
  with pytest.raises(UserError, match="outer.real_min_tokens=21 leaves no training rows .*lower it to at most 20"):
    distill.meta_loss_rows(train, 21)
  cfg = default.get_config()
  cfg.outer.real_min_tokens = cfg.data.max_len + 1
  with pytest.raises(UserError, match=r"outer.real_min_tokens must be in \[0, data.max_len\]"):
    config.validate(cfg)


@pytest.mark.parametrize("label_lr", [0.0, 0.5])
def test_learned_labels_take_their_own_outer_learning_rate(label_lr):
  cfg = default.get_config()
  cfg.outer.clip, cfg.outer.lr, cfg.outer.label_lr = 0.0, 1e-3, label_lr
  learned = {"data": {"x": np.zeros((2, 3, 4), np.float32), "labels": 10 * np.eye(2, dtype=np.float32)},
             "lr": np.zeros(5, np.float32)}
  tx = distill.outer_tx(cfg)
  grads = jax.tree_util.tree_map(np.ones_like, learned)
  updates, _ = tx.update(grads, tx.init(learned), learned)
  # Adam's first step moves every parameter by its learning rate against the gradient's sign.
  np.testing.assert_allclose(updates["data"]["x"], -1e-3, rtol=1e-4)
  np.testing.assert_allclose(updates["data"]["labels"], -(label_lr or 1e-3), rtol=1e-4)
  np.testing.assert_allclose(updates["lr"], -cfg.outer.lr_lr, rtol=1e-4)
  if not label_lr:  # no group of its own: the optimizer state of checkpoints from before the key
    old = optax.multi_transform({"data": optax.adam(1e-3), "lr": optax.adam(cfg.outer.lr_lr)},
                                lambda l: {"data": jax.tree_util.tree_map(lambda _: "data", l["data"]), "lr": "lr"})
    assert jax.tree_util.tree_structure(tx.init(learned)) == jax.tree_util.tree_structure(old.init(learned))


@pytest.mark.parametrize("mode", ["distill", "train"])
def test_slow_steps_are_saved_by_wall_clock_between_the_step_cadence(tmp_path, monkeypatch, mode):
  """A kill no handler sees loses at most checkpoint.MAX_UNSAVED_SECONDS of work, whatever the step cadence."""
  saved = []
  save = checkpoint.save
  monkeypatch.setattr(checkpoint, "save", lambda mngr, step, *a, **kw: (saved.append(step), save(mngr, step, *a, **kw)))
  monkeypatch.setattr(checkpoint, "MAX_UNSAVED_SECONDS", 0.0)  # every step has been "slow"
  # 4 outer steps, or 1 epoch of 48 rows in batches of 16 (3 chunks of 1 step): the step cadence alone
  # would save only the last (train: the best model, then the state).
  cfg = tiny_cli_config(tmp_path, mode=mode, **{"outer.checkpoint_every": 100, "train.checkpoint_every": 100,
                                                "evaluate.after_distill": False, "train.chunk_steps": 1})
  main.run(cfg, str(tmp_path / "run"))
  assert saved == ([1, 2, 3, 4] if mode == "distill" else [1, 2, 3, 3]), FAULTS["killed"]["kept"]


def test_non_finite_meta_loss_stops_with_checkpoint_intact(tmp_path):
  main.run(tiny_cli_config(tmp_path, **{"outer.steps": 2}), str(tmp_path / "run"))
  before = _learned(str(tmp_path / "run"))
  # Resuming with an absurd outer learning rate: step 3's update is finite but
  # throws the set to 1e30, so step 4's meta-loss overflows and the run must stop.
  cfg = tiny_cli_config(tmp_path, **{"outer.lr": 1e30})
  with pytest.raises(UserError, match=r"non-finite .* at outer step 4 .*the last good checkpoint \(step 2\) is intact"):
    main.run(cfg, str(tmp_path / "run"))
  mngr = checkpoint.manager(str(tmp_path / "run" / "checkpoints"), create=False)
  assert checkpoint.latest_step(mngr) == 2
  after = _learned(str(tmp_path / "run"))
  for x, y in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_incompatible_checkpoint_is_refused(tmp_path):
  main.run(tiny_cli_config(tmp_path, **{"outer.steps": 2}), str(tmp_path / "run"))
  with pytest.raises(UserError, match="synthetic.n_per_class=2 but the config has 3"):
    main.run(tiny_cli_config(tmp_path, **{"synthetic.n_per_class": 3}), str(tmp_path / "run"))


def test_held_out_rows_are_kept_from_the_set_and_its_real_batches(tmp_path):
  exp = experiment.setup(tiny_cli_config(tmp_path))
  assert len(exp.train) == 48 and len(exp.holdout) == 16  # data.train_limit=64, data.holdout_rows=16
  assert not set(exp.train.texts) & set(exp.holdout.texts)
  _, _, _, ckpt = distill.make_problem(exp)  # the set starts from rows it may learn from
  first = data.sample_per_class(exp.train.labels, 2, 2, exp.cfg.seed)
  np.testing.assert_array_equal(np.asarray(ckpt["static"]["mask"]), exp.train.attention_mask[first])


def test_evaluate_mode_reports_distilled_baselines_and_decoded(tmp_path, monkeypatch):
  main.run(tiny_cli_config(tmp_path, **{"outer.steps": 2}), str(tmp_path / "run"))
  cfg = tiny_cli_config(tmp_path, mode="evaluate", **{"evaluate.checkpoint": str(tmp_path / "run")})
  r = main.run(cfg, str(tmp_path / "eval"))
  for key in ("distilled", "initial_set", "random_subset", "decoded_cosine", "decoded_l2"):
    assert r[key]["n"] == 2 and 0.0 <= r[key]["mean"] <= 1.0, key
  assert len(r["decoded_cosine"]["texts"]) == r["num_examples"] == 4
  assert r["random_subset"]["lr"] in (0.01, 0.1) and r["random_subset"]["n_examples"] == 4
  assert "kcenter_subset" not in r and "equal_storage_subset" not in r  # the defaults: random only
  assert len(r["step_sizes"]) == 3
  # 4 examples × 16 positions × 128 dims, 3 step sizes; against 2 B per real token of the 48 rows learned from
  train_bytes = 2 * int(experiment.setup(cfg).train.attention_mask.sum())
  assert r["storage_floats"] == 4 * 16 * 128 and r["storage"]["floats"] == 4 * 16 * 128 + 3
  assert r["storage"]["bytes"] == 4 * r["storage"]["floats"] and r["storage"]["train_token_bytes"] == train_bytes
  assert r["storage"]["ratio"] == r["storage"]["bytes"] / train_bytes
  assert os.path.exists(tmp_path / "eval" / "result_evaluate.json")
  # Ctrl-C during the random subset: the parts measured before it are kept, and the rerun takes them
  # as they are and ends with the uninterrupted run's numbers.
  case = FAULTS["interrupt_evaluation"]
  baseline = evaluate.real_baseline

  def ctrl_c(*args):
    signals._handle(signal.SIGINT, None)
  monkeypatch.setattr(evaluate, "real_baseline", ctrl_c)
  with pytest.raises(signals.Interrupted):
    main.run(cfg, str(tmp_path / "stopped"))
  assert "kept in " + str(tmp_path / "stopped" / main.EVALUATE_PARTS) in main._what_is_kept(
      "evaluate", str(tmp_path / "stopped")), case["sees"]
  monkeypatch.setattr(evaluate, "real_baseline", baseline)
  resumed = main.run(cfg, str(tmp_path / "stopped"))
  for key in ("distilled", "initial_set"):
    assert resumed[key].pop("reused_from").startswith(str(tmp_path / "stopped" / main.EVALUATE_PARTS)), case["kept"]
  for key in ("distilled", "initial_set", "random_subset", "decoded_cosine", "decoded_l2"):
    assert resumed[key] == r[key], (key, case["kept"])
  assert "reused_from" not in resumed["random_subset"]
  # The exported set evaluates to the same accuracies as the checkpoint it was written from, and
  # the coresets and the equal-storage subset leave the random subset's draw and numbers as they were.
  exported = str(tmp_path / "run" / "distilled")
  assert distill_jax.load_distilled(exported)["texts"] is not None
  again = main.run(tiny_cli_config(tmp_path, mode="evaluate", **{"evaluate.checkpoint": exported,
                                                                  "evaluate.coresets": ("random", "kcenter", "herding"),
                                                                  "evaluate.equal_storage": True,
                                                                  "evaluate.ceiling_batch_size": 0,
                                                                  "evaluate.decode": False}),
                   str(tmp_path / "eval_export"))
  assert again["distilled"]["accs"] == r["distilled"]["accs"] and again["step_sizes"] == r["step_sizes"]
  assert again["random_subset"] == r["random_subset"]
  assert again["storage"]["floats"] == 4 * 16 * 128 + 4 * 2 + 3  # the export stores its targets as floats
  assert again["coreset_features"].endswith("(random features)") and again["coreset_pool"] == {"rows": 48, "of": 48}
  for key in ("kcenter_subset", "herding_subset", "equal_storage_subset"):
    assert again[key]["n"] == 2 and 0.0 <= again[key]["mean"] <= 1.0 and again[key]["lr"] in (0.01, 0.1), key
  assert again["kcenter_subset"]["n_examples"] == again["herding_subset"]["n_examples"] == 4
  equal = again["equal_storage_subset"]  # the set's 32 kB hold every pool row's token ids
  assert equal["n_examples"] == 48 and equal["bytes"] <= again["storage"]["bytes"] and equal["batch_size"] == 48


def test_addressable_parametrisation_trains_through_the_same_engine(tmp_path):
  cfg = tiny_cli_config(tmp_path, **{"synthetic.kind": "addressable", "synthetic.num_bases": 2,
                                     "synthetic.label_mode": "soft"})
  exp = experiment.setup(cfg)
  syn, _, step_fn, ckpt = distill.make_problem(exp)
  assert isinstance(syn, synthetic.Addressable)
  d0 = jax.tree_util.tree_map(np.array, ckpt["state"]["learned"]["data"])  # the step donates its input
  state, m = step_fn(ckpt["state"], ckpt["static"], exp.device_split(exp.train))
  assert bool(m["finite"])
  d1 = state["learned"]["data"]
  for k in ("bases", "addresses", "label_bases"):
    assert np.abs(np.asarray(d1[k]) - np.asarray(d0[k])).max() > 0, k


def test_evaluate_config_keeps_saved_values_and_defaults_keys_the_checkpoint_predates(tmp_path):
  cli = tiny_cli_config(tmp_path)
  saved = cli.to_dict()
  saved["inner"] = {k: v for k, v in saved["inner"].items() if k != "random_window"}  # an older run
  del saved["inner"]["steps"]  # an older run: flat keys from before the config was grouped
  saved["inner_steps"], saved["inner"]["lr"] = 7, 0.123
  cli.evaluate.seeds = 3
  cfg = evaluate.eval_config(cli, config.upgrade(saved))
  assert cfg.inner.steps == 7 and cfg.inner.lr == 0.123  # the distillation run's values
  assert cfg.inner.random_window is False  # the missing key: today's default
  assert cfg.evaluate.seeds == 3 and cfg.mode == "evaluate"  # this command's evaluation settings


def test_per_group_step_sizes_and_random_windows_distil_and_evaluate(tmp_path):
  over = {"outer.steps": 2, "inner.lr_groups": "layer", "inner.backprop_steps": 2, "inner.random_window": True}
  main.run(tiny_cli_config(tmp_path, **over), str(tmp_path / "run"))
  lr = np.asarray(_learned(str(tmp_path / "run"))["state"]["learned"]["lr"])
  assert lr.shape == (3, 5) and np.abs(lr - lr[0, 0]).max() > 0  # [T, groups], and learned
  cfg = tiny_cli_config(tmp_path, mode="evaluate", **{"evaluate.checkpoint": str(tmp_path / "run")},
                        **{"evaluate.baselines": False, "evaluate.decode": False})
  r = main.run(cfg, str(tmp_path / "eval"))
  assert np.asarray(r["step_sizes"]).shape == (3, 5) and 0.0 <= r["distilled"]["mean"] <= 1.0
  with pytest.raises(UserError, match="inner.lr_groups='layer' but the config has 'global'"):
    main.run(tiny_cli_config(tmp_path, **{"outer.steps": 4}), str(tmp_path / "run"))


def test_token_distributions_distil_resume_and_evaluate_with_decoding(tmp_path):
  over = {"synthetic.kind": "tokens", "synthetic.vocab_size": 64, "init.fixed_word_embeddings": True,
          "outer.lr": 0.1}
  main.run(tiny_cli_config(tmp_path, **{**over, "outer.steps": 2}), str(tmp_path / "run"))
  d0 = _learned(str(tmp_path / "run"))["state"]["learned"]["data"]["logits"]
  main.run(tiny_cli_config(tmp_path, **over), str(tmp_path / "run"))  # resumes to outer.steps=4
  d1 = _learned(str(tmp_path / "run"))["state"]["learned"]["data"]["logits"]
  assert d1.shape[-1] == 64 and np.abs(np.asarray(d1) - np.asarray(d0)).max() > 0
  evaluation = tiny_cli_config(tmp_path, mode="evaluate", **{"evaluate.checkpoint": str(tmp_path / "run")}, **over)
  r = main.run(evaluation, str(tmp_path / "eval"))
  assert r["synthetic_kind"] == "tokens" and r["outer_steps"] == 4
  assert r["storage"]["token_ids"] == 64  # its candidate vocabulary, counted once
  assert r["distilled"]["n"] == 2 and len(r["decoded_argmax"]["texts"]) == 4
  with pytest.raises(UserError, match="written with synthetic.vocab_size=64"):
    main.run(tiny_cli_config(tmp_path, **{**over, "synthetic.vocab_size": 128, "outer.steps": 6}),
             str(tmp_path / "run"))


def test_superposed_sets_start_from_real_examples_of_their_own_class(tmp_path):
  cfg = tiny_cli_config(tmp_path, **{"synthetic.kind": "tokens", "synthetic.superpose": 3,
                                     "synthetic.vocab_size": 256})
  exp = experiment.setup(cfg)
  _, learned, static = synthetic.initial_set(exp)
  np.testing.assert_array_equal(static["labels"], [0, 0, 1, 1])
  rows = data.sample_per_class(exp.train.labels, 2 * 3, 2, cfg.seed).reshape(4, 3)
  assert np.all(exp.train.labels[rows] == np.asarray(static["labels"])[:, None])
  probs = np.asarray(jax.nn.softmax(learned["data"]["logits"], -1))
  vocab = np.asarray(static["vocab"][0])
  for m in range(4):  # at the first token after [CLS], each source's token holds about a third of the mass
    first = exp.train.input_ids[rows[m], 1]
    shares = np.array([probs[m, 1, np.searchsorted(vocab, t)] for t in np.unique(first)])
    counts = np.array([np.sum(first == t) for t in np.unique(first)])
    np.testing.assert_allclose(shares / shares.sum(), counts / 3, atol=1e-3)
    assert shares.sum() > 0.98  # the rest spread over the other 250-odd candidates


def test_sparse_superposed_sets_distil_and_evaluate_from_their_candidates(tmp_path):
  over = {"synthetic.kind": "tokens", "synthetic.superpose": 3, "synthetic.vocab_size": 256,
          "synthetic.candidates_per_position": 3, "init.fixed_word_embeddings": True, "outer.lr": 0.1}
  main.run(tiny_cli_config(tmp_path, **over), str(tmp_path / "run"))
  learned = _learned(str(tmp_path / "run"))
  start = synthetic.initial_set(experiment.setup(tiny_cli_config(tmp_path, **over)))[1]["data"]["logits"]
  logits = learned["state"]["learned"]["data"]["logits"]
  assert logits.shape == (4, 16, 3) and np.abs(np.asarray(logits) - np.asarray(start)).max() > 0
  evaluation = tiny_cli_config(tmp_path, mode="evaluate", **{"evaluate.checkpoint": str(tmp_path / "run")}, **over)
  r = main.run(evaluation, str(tmp_path / "eval"))
  assert r["storage_floats"] == 4 * 16 * 3 and r["distilled"]["n"] == 2 and r["outer_steps"] == 4
  assert r["storage"]["token_ids"] == 4 * 16 * 3  # each position's candidates: no vocabulary needed besides


def test_attention_labels_start_from_a_trained_teacher_distil_and_evaluate(tmp_path):
  from distill_jax import modeling
  teacher = str(tmp_path / "teacher")
  main.run(tiny_cli_config(tmp_path, mode="train"), teacher)
  over = {"synthetic.attention_labels": True, "synthetic.attention_teacher": teacher, "inner.attention_weight": 0.5,
          "outer.steps": 2}
  exp = experiment.setup(tiny_cli_config(tmp_path, **over))
  syn, learned, static = synthetic.initial_set(exp)
  assert isinstance(syn, synthetic.WithAttention)
  # The labels start as the teacher's attention on the real rows the set starts from, not θ0's.
  rows = data.sample_per_class(exp.train.labels, 2, 2, exp.cfg.seed)
  batch = dict(input_ids=exp.train.input_ids[rows], attention_mask=exp.train.attention_mask[rows])
  params = checkpoint.restore_state(checkpoint.manager(os.path.join(teacher, "train_checkpoints"), create=False))
  start = syn.materialize(learned["data"], static)["attention"]
  assert start.shape == (4, 2, 2, 16, 16)  # BERT-Tiny: 2 layers, 2 heads; max_len 16
  np.testing.assert_allclose(start, modeling.attention_of(exp.model, params["params"], batch), atol=1e-6)
  assert np.abs(start - modeling.attention_of(exp.model, exp.init_fn(jax.random.PRNGKey(0)), batch)).max() > 1e-3
  result = main.run(tiny_cli_config(tmp_path, **over), str(tmp_path / "run"))
  assert result["attention_teacher"] == teacher
  z = _learned(str(tmp_path / "run"))["state"]["learned"]["data"]["attention"]
  assert np.abs(np.asarray(z) - np.asarray(learned["data"]["attention"])).max() > 0  # learned
  evaluation = {"mode": "evaluate", "evaluate.baselines": False, "evaluate.ceiling_batch_size": 0}
  r = main.run(tiny_cli_config(tmp_path, **evaluation, **{"evaluate.checkpoint": str(tmp_path / "run")}),
               str(tmp_path / "eval"))
  assert r["attention_teacher"] == teacher and r["attention_weight"] == 0.5
  assert r["storage_floats"] == 4 * 16 * 128 + 4 * 2 * 2 * 16 * 16  # the embeddings and the attention labels
  assert r["distilled"]["n"] == 2 and len(r["decoded_cosine"]["texts"]) == 4
  exported = str(tmp_path / "run" / "distilled")
  assert distill_jax.load_distilled(exported)["attention"].shape == (4, 2, 2, 16, 16)
  again = main.run(tiny_cli_config(tmp_path, **evaluation, **{"evaluate.checkpoint": exported,
                                                              "evaluate.decode": False}), str(tmp_path / "eval2"))
  assert again["distilled"]["accs"] == r["distilled"]["accs"]  # trained with the same KL term
  with pytest.raises(UserError, match="written with synthetic.attention_labels=True"):
    main.run(tiny_cli_config(tmp_path, **{"outer.steps": 3}), str(tmp_path / "run"))
  with pytest.raises(UserError, match="holds no training checkpoint"):  # a distillation is not a teacher
    synthetic.initial_set(experiment.setup(tiny_cli_config(
        tmp_path, **{**over, "synthetic.attention_teacher": str(tmp_path / "run" / "distilled")})))


def test_checkpoints_written_before_the_config_was_grouped_still_evaluate_and_resume(tmp_path):
  main.run(tiny_cli_config(tmp_path, **{"outer.steps": 2}), str(tmp_path / "run"))
  flat = {"data": "dataset data_dir vocab cache_dir train_split eval_split max_len train_limit eval_limit",
          "synthetic": "n_per_class", "inner": "steps", "evaluate": "checkpoint"}
  for meta in (tmp_path / "run" / "checkpoints").glob("*/config/metadata"):
    saved = json.loads(meta.read_text())
    for group, keys in flat.items():  # the layout of older releases: these keys at the top level
      for key in keys.split():
        saved["inner_steps" if key == "steps" else key] = saved[group].pop(key)
    del saved["synthetic"]["attention_labels"], saved["synthetic"]["attention_teacher"]  # nor these keys
    del saved["inner"]["attention_weight"]
    meta.write_text(json.dumps(saved))
  evaluation = tiny_cli_config(tmp_path, mode="evaluate", **{"evaluate.checkpoint": str(tmp_path / "run"),
                                                             "evaluate.baselines": False,
                                                             "evaluate.ceiling_batch_size": 0,
                                                             "evaluate.decode": False})
  r = main.run(evaluation, str(tmp_path / "eval"))
  assert r["outer_steps"] == 2 and r["inner_steps"] == 3 and r["dataset"] == "rotten_tomatoes"
  main.run(tiny_cli_config(tmp_path, **{"outer.steps": 3}), str(tmp_path / "run"))  # resumes: same shape keys
  assert int(_learned(str(tmp_path / "run"))["state"]["step"]) == 3
