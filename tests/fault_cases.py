"""The faults tests/test_faults.py injects, as data: each test asserts its case's `sees` and `kept`,
and scripts/make_tables.py renders the list as the table in docs/troubleshooting.md."""

FAULTS = {
    "train_on_distill_workdir": dict(
        fault="`--config.mode=train` on a workdir that holds a distillation",
        sees="training runs; its best checkpoint goes to `train_checkpoints/`",
        kept="every distillation checkpoint in `checkpoints/`; resuming it still works"),
    "update_overflows": dict(
        fault="a learning rate so large that the update overflows (`--config.outer.lr=1e38`)",
        sees="`error: non-finite meta-loss, meta-gradient or update at outer step N ...; the last good checkpoint "
             "(step K) is intact. Lower --config.outer.lr ...`",
        kept="checkpoints up to the last finite step; no checkpoint holds a non-finite value"),
    "non_finite_learning_rate": dict(
        fault="`--config.outer.lr=inf` (or nan, or any learning rate <= 0)",
        sees="`error: bad config: outer.lr must be a finite number > 0` within seconds",
        kept="everything: nothing is read or written"),
    "evaluate_other_dataset": dict(
        fault="`--config=configs/agnews.py --config.mode=evaluate` on a checkpoint distilled on another dataset",
        sees="a warning `evaluating on <the checkpoint's dataset>`; the result names that dataset",
        kept="the result records the data it really used"),
    "truncated_newest_checkpoint": dict(
        fault="the newest checkpoint's array files truncated (a crash or copy cut short)",
        sees="a warning `checkpoint step N is damaged (...): moved to damaged-N`; the run resumes from step N-1",
        kept="every intact step; the damaged folder, renamed, for inspection"),
    "garbled_or_empty_checkpoint": dict(
        fault="garbage in `<step>/config/metadata`, or an empty `checkpoints/<N>` folder",
        sees="evaluate and resume warn `checkpoint step N ... is damaged ...: skipped` and use the newest intact step",
        kept="every intact step"),
    "all_checkpoints_damaged": dict(
        fault="every checkpoint of a run damaged",
        sees="`error: every checkpoint in DIR is damaged (steps ...); move the folder away and start again, or pass "
             "a new --workdir`",
        kept="the damaged folders, untouched"),
    "refused_resume": dict(
        fault="resuming with a changed shape key (e.g. `--config.synthetic.n_per_class=3`)",
        sees="`error: checkpoint in DIR was written with synthetic.n_per_class=2 but the config has 3; use "
             "--config.synthetic.n_per_class=2 or a new --workdir`",
        kept="the run's config_distill.json, metrics and checkpoints, unchanged"),
    "unknown_dataset": dict(
        fault="`--config.data.dataset=nosuch`",
        sees="`error: unknown dataset 'nosuch'; use one of ...` within seconds",
        kept="no workdir is created"),
    "resume_with_other_inner_lr": dict(
        fault="resuming with another `--config.inner.lr`",
        sees="a warning `resuming keeps the step sizes learned so far; inner.lr=... only sets where new runs start`",
        kept="the learned step sizes"),
    "interrupt": dict(
        fault="Ctrl-C (SIGINT) or SIGTERM during distillation",
        sees="`interrupted at step N; checkpoint saved in DIR; rerun the same command to resume`, exit 130 "
             "(SIGTERM: 143), no traceback",
        kept="a checkpoint of the last finished step"),
    "interrupt_training": dict(
        fault="Ctrl-C (SIGINT) or SIGTERM during full-data training (`--config.mode=train`)",
        sees="`interrupted at step N; training state saved in DIR; rerun the same command to resume`",
        kept="the training state of the last finished chunk of steps; the rerun ends where an uninterrupted "
             "run does (same held-out accuracies, same best model)"),
    "killed": dict(
        fault="the process killed where no handler sees it (SIGKILL, the OOM killer, a lost machine)",
        sees="nothing: the process ends at once; the same command resumes from the newest checkpoint "
             "(`resumed from step N`) and ends where an uninterrupted run does",
        kept="the newest checkpoint: distillation saves every `outer.checkpoint_every` steps, training every "
             "`train.checkpoint_every` steps and at each epoch's end, and both after 10 minutes without a save "
             "(`checkpoint.MAX_UNSAVED_SECONDS`), so a kill costs at most that much work"),
    "resume_training_with_other_config": dict(
        fault="resuming a training run with another learning rate, batch size, epochs, seed, ...",
        sees="`error: checkpoint in DIR/train_state was written with train.learning_rate=A but the config has B; "
             "use --config.train.learning_rate=A or a new --workdir`",
        kept="everything: the refusal comes before anything is written"),
    "interrupt_evaluation": dict(
        fault="Ctrl-C (SIGINT) or SIGTERM during `--config.mode=evaluate` (on IMDB its parts take hours)",
        sees="`interrupted (SIGINT); the finished parts of the evaluation are kept in DIR/evaluate_parts; rerun the "
             "same command to continue from them`",
        kept="every finished part (distilled set, initial set, each coreset, equal storage, ceiling, decoded text), "
             "keyed by the evaluation's config and the set's digest; the rerun reuses them and ends with the "
             "uninterrupted run's numbers"),
    "second_run_same_workdir": dict(
        fault="a second run started on a workdir another run is using",
        sees="`error: workdir DIR is in use by another distill_jax run (PID N); wait for it to finish or pass "
             "another --workdir`",
        kept="the first run, which goes on undisturbed: the second is refused before it reads the checkpoints "
             "the first is rotating"),
    "disk_full_checkpoint": dict(
        fault="the disk fills while a checkpoint is written",
        sees="`error: no space left on device writing checkpoint step N in DIR; the last checkpoint (step K) is "
             "intact; free space and rerun the same command to resume`",
        kept="every earlier checkpoint; no partial checkpoint folder"),
    "disk_full_json": dict(
        fault="the disk is full when `config_*.json`, `result_*.json` or `metrics.jsonl` is written",
        sees="`error: no space left on device writing PATH; the checkpoints are intact; ...`",
        kept="the previous file; no `.tmp` file left behind"),
    "zero_period": dict(
        fault="`--config.outer.log_every=0` (or any other zero or negative period or size)",
        sees="`error: bad config: outer.log_every must be >= 1` within seconds, before compiling",
        kept="everything: nothing is read or written"),
    "edited_cache": dict(
        fault="a cached tokenized `.npz` edited (labels out of range, wrong lengths, out-of-vocabulary ids)",
        sees="a warning naming the file and what is wrong; the split is tokenized again (tests/test_data.py)",
        kept="the data files; the cache is rewritten"),
    "huge_max_len": dict(
        fault="`--config.data.max_len=100000`",
        sees="`error: bad config: data.max_len=100000 exceeds the model's 512 position embeddings` within seconds",
        kept="everything: no data is read"),
    "real_batch_above_rows": dict(
        fault="`outer.real_batch_size` larger than the training split",
        sees="a warning `outer.real_batch_size=N exceeds the M training rows: each outer step scores all of them`",
        kept="the run goes on with all rows"),
}
