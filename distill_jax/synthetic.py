"""Parametrisations of the learned synthetic set, behind one interface.

A parametrisation owns `params` (what the outer optimizer updates) and
`static` (fixed arrays such as hard labels and attention masks) and turns them
into a batch-shaped set with `materialize`. The engine never branches on which
one it has.

- `Direct`: Wang et al. 2018 — every synthetic example is its own L×H tensor.
- `Addressable`: Deng & Russakovsky 2022 — K shared memories (bases) and an
  M×K addressing matrix; example i = Σ_k A[i,k]·base_k, and its label is the
  same combination of per-memory label vectors when labels are learned.
- `Tokens`: every position is a learned distribution over a candidate
  vocabulary (the training set's most frequent tokens). The inner loop embeds
  it through θ's own word table, so, unlike embeddings fed past the table, its
  steps train the table as real text does, and the data keeps one meaning
  under any θ0, fresh table or not.

`WithAttention` adds learned attention labels (Maekawa et al. 2023) to a
`Direct` or `Tokens` set: the set carries, per example, layer and head, a
target attention distribution that the inner loss pulls the student toward.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from distill_jax import checkpoint, data, modeling
from distill_jax.errors import UserError

if TYPE_CHECKING:
  from distill_jax import experiment

LABEL_MODES = ("hard", "soft", "real")
# Initial scale of learned soft-label logits: softmax(10·onehot) ≈ 0.99995 on the class.
_SOFT_LABEL_SCALE = 10.0


@dataclasses.dataclass(frozen=True)
class SetShape:
  num_examples: int
  seq_len: int
  hidden: int
  num_classes: int
  label_mode: str = "hard"

  def __post_init__(self):
    if self.label_mode not in LABEL_MODES:
      raise UserError(f"unknown label_mode {self.label_mode!r}; use one of {LABEL_MODES}")


def _targets(shape: SetShape, labels: jax.Array, raw: Optional[jax.Array]) -> jax.Array:
  """Hard labels are fixed one-hot; 'soft' are softmax(logits); 'real' are unrestricted reals."""
  if shape.label_mode == "hard":
    return jax.nn.one_hot(labels, shape.num_classes)
  if shape.label_mode == "soft":
    return jax.nn.softmax(raw, axis=-1)
  return raw


def _init_label_params(shape: SetShape, labels: np.ndarray) -> dict:
  if shape.label_mode == "hard":
    return {}
  onehot = np.eye(shape.num_classes, dtype=np.float32)[labels]
  return {"labels": jnp.asarray(onehot * (_SOFT_LABEL_SCALE if shape.label_mode == "soft" else 1.0))}


@dataclasses.dataclass(frozen=True)
class Direct:
  shape: SetShape

  def init(self, embeds: jax.Array, masks: np.ndarray, labels: np.ndarray) -> tuple[dict, dict]:
    """`embeds` [M, L, H] are the starting inputs (random or embedded real examples)."""
    s = self.shape
    chex.assert_shape(embeds, (s.num_examples, s.seq_len, s.hidden))
    params = {"x": jnp.asarray(embeds, jnp.float32), **_init_label_params(s, labels)}
    return params, {"labels": jnp.asarray(labels, jnp.int32), "mask": jnp.asarray(masks, jnp.int32)}

  def materialize(self, params: dict, static: dict) -> dict:
    return {"inputs_embeds": params["x"], "attention_mask": static["mask"],
            "targets": _targets(self.shape, static["labels"], params.get("labels"))}


@dataclasses.dataclass(frozen=True)
class Addressable:
  shape: SetShape
  num_bases: int

  def init(self, embeds: jax.Array, masks: np.ndarray, labels: np.ndarray) -> tuple[dict, dict]:
    """Memories start as copies of examples, dealt to classes in turn; each example
    addresses (one-hot) a memory of its own class, so initial labels agree."""
    s, k = self.shape, self.num_bases
    chex.assert_shape(embeds, (s.num_examples, s.seq_len, s.hidden))
    if k < s.num_classes:
      raise UserError(f"synthetic.num_bases={k} < {s.num_classes} classes; each class needs a memory")
    labels = np.asarray(labels)
    members = [np.flatnonzero(labels == c) for c in range(s.num_classes)]
    base_class = np.arange(k) % s.num_classes
    owned = [np.flatnonzero(base_class == c) for c in range(s.num_classes)]
    pick = np.array([members[c][list(owned[c]).index(b) % len(members[c])] for b, c in enumerate(base_class)])
    addresses = np.zeros((s.num_examples, k), np.float32)
    for c in range(s.num_classes):
      for rank, i in enumerate(members[c]):
        addresses[i, owned[c][rank % len(owned[c])]] = 1.0
    params = {"bases": jnp.asarray(embeds)[pick], "addresses": jnp.asarray(addresses)}
    if s.label_mode != "hard":
      params["label_bases"] = _init_label_params(s, base_class)["labels"]
    return params, {"labels": jnp.asarray(labels, jnp.int32), "mask": jnp.ones((s.num_examples, s.seq_len), jnp.int32)}

  def materialize(self, params: dict, static: dict) -> dict:
    a = params["addresses"]
    x = jnp.einsum("mk,klh->mlh", a, params["bases"])
    raw = a @ params["label_bases"] if "label_bases" in params else None
    return {"inputs_embeds": x, "attention_mask": static["mask"],
            "targets": _targets(self.shape, static["labels"], raw)}


def candidate_vocab(train_ids: np.ndarray, init_ids: np.ndarray, size: int) -> np.ndarray:
  """Token ids the `Tokens` set may use: those of its initial examples, then the most frequent in training."""
  own = np.unique(init_ids)
  if size < 2:
    raise UserError("synthetic.kind='tokens' needs --config.synthetic.vocab_size >= 2")
  if size < len(own):
    raise UserError(f"synthetic.vocab_size={size} < the {len(own)} distinct tokens of the initial examples; "
                    f"raise it to at least {len(own)}")
  counts = np.bincount(np.asarray(train_ids).ravel(), minlength=int(own.max()) + 1)
  counts[own] = -1  # already in
  counts[0] = -1  # [PAD]: a real position is never padding
  frequent = np.argsort(-counts, kind="stable")[:size - len(own)]
  return np.sort(np.concatenate([own, frequent[counts[frequent] > 0]])).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Tokens:
  shape: SetShape
  # Initial logit of an example's own token (others 0): 10 puts ≈ 0.9 of the mass on it against
  # 2,048 candidates; smaller values start each position spread over many words, so one position
  # trains many word-table rows from the first inner step.
  logit_scale: float = 10.0
  # > 0: each position keeps only its K most likely candidates at the start (learned logits [M, L, K]
  # instead of [M, L, V]). A superposed position holds at most k distinct tokens and the others start
  # with ~e^-s of the mass, so K ≥ that count stores the same start in a fraction of the floats; the
  # outer steps then reweight those tokens but cannot bring in new ones.
  candidates_per_position: int = 0
  # Which K: "frequent" (each position's most frequent tokens among its superposed examples) or
  # "distinctive" (the class's tokens that most separate it from the other classes, pooled over all
  # positions and spread over the example's positions): at small K the frequent ones are mostly
  # function words shared by every class, while mean pooling reads a bag of words (docs/results.md).
  candidate_choice: str = "frequent"

  def init(self, ids: np.ndarray, masks: np.ndarray, labels: np.ndarray, vocab: np.ndarray) -> tuple[dict, dict]:
    """`ids` [M, L] are the starting examples, or [M, k, L]: k real examples per synthetic one, superposed.

    A position's starting distribution is the share p of each token among the
    examples that have a real token there, as logits log(1 + p·(e^s − 1)) with
    s = `logit_scale`: for one example, s on its token and 0 elsewhere. Why
    superpose: from a random init the T inner steps learn in the word table, so
    what the set can teach grows with the number of distinct rows it touches;
    20 sentences touch too few (docs/diagnosis.md, finding 11).
    """
    s = self.shape
    ids, masks = np.asarray(ids), np.asarray(masks)
    if ids.ndim == 2:
      ids, masks = ids[:, None], masks[:, None]
    chex.assert_shape(ids, (s.num_examples, None, s.seq_len))
    chex.assert_equal_shape([ids, masks])
    pos = np.searchsorted(vocab, ids)
    if np.any(vocab[np.minimum(pos, len(vocab) - 1)] != ids):
      raise UserError("the initial examples have tokens outside the candidate vocabulary")
    # Where none of the k examples has a token (padding everywhere), count the padding so every
    # position has a distribution; the set's mask hides those positions anyway.
    real = masks > 0
    weight = np.where(real.any(1, keepdims=True), real, True).astype(np.float32)
    counts = np.zeros((s.num_examples, s.seq_len, len(vocab)), np.float32)
    m, _, l = np.indices(ids.shape)
    np.add.at(counts, (m, l, pos), weight)
    share = counts / counts.sum(-1, keepdims=True)
    with np.errstate(divide="ignore"):  # log 0 = -inf is meant: logaddexp then gives exactly 0
      sc = self.logit_scale
      logits = (np.logaddexp(np.log(share) + np.log(-np.expm1(-sc)), -sc) + sc).astype(np.float32)
    # The vocabulary repeats per example so that minibatch indexing keeps every key's leading axis M.
    static = {"labels": jnp.asarray(labels, jnp.int32), "mask": jnp.asarray(real.any(1), jnp.int32),
              "vocab": jnp.broadcast_to(jnp.asarray(vocab, jnp.int32), (s.num_examples, len(vocab)))}
    if self.candidates_per_position and self.candidate_choice == "distinctive":
      keep, logits = distinctive_candidates(counts * real.any(1)[..., None], labels, real.any(1),
                                            self.candidates_per_position)
      static["candidates"] = jnp.asarray(keep, jnp.int32)
    elif self.candidates_per_position:
      keep = np.argsort(-logits, axis=-1, kind="stable")[..., :self.candidates_per_position]
      dropped = np.take_along_axis(share, keep, -1).sum(-1) < 1.0 - 1e-6
      if dropped.any():
        logging.info("tokens: %d of %d positions hold more than %d candidates; their rarest are dropped",
                     int(dropped.sum()), dropped.size, self.candidates_per_position)
      logits, static["candidates"] = np.take_along_axis(logits, keep, -1), jnp.asarray(keep, jnp.int32)
    return {"logits": jnp.asarray(logits), **_init_label_params(s, labels)}, static

  def materialize(self, params: dict, static: dict) -> dict:
    probs = jax.nn.softmax(params["logits"], axis=-1)
    if "candidates" in static:  # back to [M, L, V], zero off each position's candidates
      m, l, _ = jnp.indices(probs.shape, sparse=True)
      probs = jnp.zeros(probs.shape[:2] + static["vocab"].shape[-1:], probs.dtype).at[
          m, l, static["candidates"]].set(probs)
    return {"token_probs": probs, "token_vocab": static["vocab"],
            "attention_mask": static["mask"],
            "targets": _targets(self.shape, static["labels"], params.get("labels"))}


def distinctive_candidates(counts: np.ndarray, labels: np.ndarray, mask: np.ndarray,
                           k: int) -> tuple[np.ndarray, np.ndarray]:
  """Each example's `k` × (real positions) most distinctive candidates: ([M, L, k] vocab indices, logits).

  A token's score for an example of class c is its count over all positions of
  the example's sources times its smoothed log-odds against the other classes'
  sources (0 when it is no likelier in c); rank i goes to real position i mod n
  at slot i // n, so every position holds some of the best, at log-count logits.
  """
  totals = counts.sum(1)  # [M, V]: a bag of words per example
  vocab_size = totals.shape[-1]
  keep = np.zeros(counts.shape[:2] + (k,), np.int64)
  logits = np.zeros(counts.shape[:2] + (k,), np.float32)
  for m in range(len(totals)):
    own, other = totals[m], totals[labels != labels[m]].sum(0)
    odds = np.log((own + 1) / (own.sum() + vocab_size)) - np.log((other + 1) / (other.sum() + vocab_size))
    score = np.where(own > 0, own * np.maximum(odds, 0.0), -1.0)  # tokens it never has go last
    positions = np.flatnonzero(mask[m])
    ranked = np.argsort(-score, kind="stable")[:len(positions) * k]
    slot = np.arange(len(ranked))
    keep[m, positions[slot % len(positions)], slot // len(positions)] = ranked
    logits[m, positions[slot % len(positions)], slot // len(positions)] = np.log(np.maximum(own[ranked], 1e-3))
  return keep, logits


@dataclasses.dataclass(frozen=True)
class WithAttention:
  """A `Direct` or `Tokens` set plus learned attention labels (Maekawa et al. 2023).

  `materialize` adds "attention" [M, layers, heads, L, L]: per example, layer,
  head and query, a distribution over the keys, which `modeling.set_loss`
  pulls the student's attention toward. Learned as logits read through a
  softmax over the keys with padding keys at −∞ (`attention_targets`): any
  Adam update leaves a valid distribution that puts nothing on padding, where
  learned probabilities would need a projection back onto the simplex after
  every step. They start as the log of a teacher's probabilities
  (`attention_logits`), which the softmax gives back.
  """

  base: Any  # Direct | Tokens

  @property
  def shape(self) -> SetShape:
    return self.base.shape

  def materialize(self, params: dict, static: dict) -> dict:
    rest = {k: v for k, v in params.items() if k != "attention"}
    return {**self.base.materialize(rest, static), "attention": attention_targets(params["attention"], static["mask"])}


def attention_logits(probs: jax.Array) -> jax.Array:
  """Learned logits whose masked softmax is `probs` (zeros, e.g. on padding, clamped to the smallest normal)."""
  return jnp.log(jnp.maximum(probs, jnp.finfo(probs.dtype).tiny))


def attention_targets(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """[M, layers, heads, L, L] logits → distributions over the keys of `mask` [M, L] (the model's masking)."""
  chex.assert_rank(logits, 5)
  chex.assert_shape(mask, (logits.shape[0], logits.shape[-1]))
  keys = mask[:, None, None, None, :] > 0
  return jax.nn.softmax(jnp.where(keys, logits, jnp.finfo(logits.dtype).min), axis=-1)


def num_learned_floats(params: dict) -> int:
  """Learned floats of a tree: of the data parametrisation alone (`storage_floats`), or with step sizes."""
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


FLOAT_BYTES = 4  # learned arrays are stored as float32
TOKEN_BYTES = 2  # uint16 holds every id of BERT's 30,522-token WordPiece vocabulary
STORAGE_CONVENTION = (f"set: {FLOAT_BYTES} B (float32) per learned float, step sizes and learned labels included, "
                      f"and {TOKEN_BYTES} B per token id a token set needs; data: {TOKEN_BYTES} B (uint16) per "
                      "non-padding token id of the training rows after truncation to data.max_len")


def token_bytes(attention_mask: np.ndarray) -> np.ndarray:
  """Per row, the bytes of its token ids: non-padding tokens × `TOKEN_BYTES`."""
  return TOKEN_BYTES * np.asarray(attention_mask).astype(bool).sum(-1).astype(np.int64)


def defining_token_ids(arrays: dict) -> int:
  """Token ids a token set needs besides its floats: each position's candidates when sparse, else its
  candidate vocabulary once (kept per example in `static` only for minibatch indexing); 0 for other sets."""
  if "candidates" in arrays:
    return int(np.prod(arrays["candidates"].shape))
  vocab = arrays.get("vocab", arrays.get("token_vocab"))
  return int(vocab.shape[-1]) if vocab is not None else 0


def storage(learned: dict, train_mask: np.ndarray, token_ids: int = 0) -> dict:
  """A set's size against the data it replaces: why a set is small enough to be worth it.

  `learned` holds every learned array that defines the set (data
  parametrisation, learned labels, raw step sizes), each float costing
  `FLOAT_BYTES`; a token set also needs `token_ids` ids (`defining_token_ids`)
  at `TOKEN_BYTES`. The data is the training split's token ids as they would be
  stored compactly: its non-padding tokens after truncation to max_len, at
  `TOKEN_BYTES` each. Fixed labels and masks count on neither side. `ratio` > 1:
  the set is larger than the text it replaces.
  """
  floats = num_learned_floats(learned)
  size = FLOAT_BYTES * floats + TOKEN_BYTES * token_ids
  train = int(token_bytes(train_mask).sum())
  return dict(floats=floats, token_ids=token_ids, bytes=size, train_token_bytes=train,
              ratio=size / max(train, 1), convention=STORAGE_CONVENTION)


def build(kind: str, shape: SetShape, num_bases: int = 0, token_logit_scale: float = 10.0,
          candidates_per_position: int = 0, candidate_choice: str = "frequent"):
  if kind == "tokens":
    return Tokens(shape, token_logit_scale, candidates_per_position, candidate_choice)
  if kind == "direct":
    return Direct(shape)
  if kind == "addressable":
    if num_bases < 1:
      raise UserError("synthetic.kind='addressable' needs --config.synthetic.num_bases >= 1")
    return Addressable(shape, num_bases)
  raise UserError(f"unknown synthetic.kind {kind!r}; use 'direct', 'addressable' or 'tokens'")


# ---- learned step sizes -----------------------------------------------------

def _inverse_softplus(y: float) -> float:
  return float(np.log(np.expm1(y)))


def init_step_sizes(lr: float, steps: int, param: str) -> jax.Array:
  """Raw (unconstrained) step sizes whose positive transform equals `lr` at every step."""
  if lr <= 0:
    raise UserError(f"inner.lr={lr} must be > 0")
  if param == "softplus":
    raw = _inverse_softplus(lr)
  elif param == "log":
    raw = float(np.log(lr))
  else:
    raise UserError(f"unknown inner.lr_param {param!r}; use 'softplus' or 'log'")
  return jnp.full((steps,), raw, jnp.float32)


def step_sizes(raw: jax.Array, param: str) -> jax.Array:
  """Positive per-step learning rates from their raw parametrisation."""
  return jax.nn.softplus(raw) if param == "softplus" else jnp.exp(raw)


# ---- the starting set of a run ---------------------------------------------

def _initial_embeddings(exp: "experiment.Experiment", idx: np.ndarray,
                        shape: SetShape) -> tuple[jax.Array, np.ndarray]:
  """Starting inputs and masks of an embedding-space set: the chosen real examples, or noise."""
  cfg = exp.cfg
  if cfg.synthetic.init == "real":
    table = modeling.word_table(exp.init_fn(jax.random.PRNGKey(cfg.init.seed)))
    return table[jnp.asarray(exp.train.input_ids[idx])], exp.train.attention_mask[idx]
  if cfg.synthetic.init == "random":
    key = jax.random.PRNGKey(cfg.seed + 1)
    embeds = cfg.synthetic.init_std * jax.random.normal(key, (shape.num_examples, shape.seq_len, shape.hidden))
    return embeds, np.ones((shape.num_examples, shape.seq_len), np.int32)
  raise UserError(f"unknown synthetic.init {cfg.synthetic.init!r}; use 'real' or 'random'")


def token_set(syn: Tokens, split: data.Split, n_per_class: int, k: int, seed: int,
              vocab_size: int) -> tuple[dict, dict]:
  """A token set's starting params and static arrays: n_per_class examples per class, each the
  superposition of k real rows of `split` of its class (sampled class by class, so rows stay grouped)."""
  c = syn.shape.num_classes
  fewest = int(np.bincount(split.labels, minlength=c).min())
  if k > 1 and n_per_class * k > fewest:
    raise UserError(f"synthetic.superpose={k} needs {n_per_class * k} training rows of every class "
                    f"(n_per_class={n_per_class} × {k}), but one class has {fewest}; lower "
                    f"--config.synthetic.superpose to at most {fewest // n_per_class}")
  idx = data.sample_per_class(split.labels, n_per_class * k, c, seed)
  ids = split.input_ids[idx].reshape(n_per_class * c, k, -1)
  vocab = candidate_vocab(split.input_ids, ids, vocab_size)
  return syn.init(ids, split.attention_mask[idx].reshape(ids.shape), split.labels[idx][::k], vocab)


def _initial_rows(exp: "experiment.Experiment") -> np.ndarray:
  """The training rows a set with `superpose=1` starts from (`token_set` draws the same ones)."""
  cfg = exp.cfg
  return data.sample_per_class(exp.train.labels, cfg.synthetic.n_per_class, exp.num_classes, cfg.seed)


def attention_teacher(cfg) -> Optional[str]:
  """What the attention labels started from, for results: a training workdir, "theta0", or None (no labels)."""
  if not cfg.synthetic.attention_labels:
    return None
  return cfg.synthetic.attention_teacher or f"theta0 (init.kind={cfg.init.kind}, init.seed={cfg.init.seed})"


def _teacher_params(exp: "experiment.Experiment") -> modeling.Params:
  """`synthetic.attention_teacher`'s newest training checkpoint (a mode=train workdir), or θ0 at init.seed."""
  theta0 = exp.init_fn(jax.random.PRNGKey(exp.cfg.init.seed))
  path = exp.cfg.synthetic.attention_teacher
  if not path:
    return theta0
  folder = os.path.join(path, "train_checkpoints")
  mngr = checkpoint.manager(folder if os.path.isdir(folder) else path, create=False)
  if not mngr.all_steps():
    raise UserError(f"synthetic.attention_teacher={path} holds no training checkpoint (train_checkpoints/); "
                    "pass the --workdir of a mode=train run")
  saved = checkpoint.restore_state(mngr)
  params = saved.get("params") if isinstance(saved, dict) else None
  body = lambda p: jax.tree_util.tree_map(np.shape, {k: v for k, v in p.items() if k != "classifier"})
  if params is None or body(params) != body(theta0):
    raise UserError(f"synthetic.attention_teacher={path} is not a mode=train workdir of this model (its "
                    "train_checkpoints/ hold other parameters); train the teacher with this run's --config.model.*")
  return jax.tree_util.tree_map(jnp.asarray, params)


def _teacher_attention(exp: "experiment.Experiment") -> jax.Array:
  """[M, layers, heads, L, L]: the teacher's attention on the real examples the set starts from."""
  idx = _initial_rows(exp)
  logging.info("attention labels: the attention of %s on the set's initial examples", attention_teacher(exp.cfg))
  batch = dict(input_ids=jnp.asarray(exp.train.input_ids[idx]),
               attention_mask=jnp.asarray(exp.train.attention_mask[idx]))
  return jax.jit(modeling.attention_of, static_argnums=0)(exp.model, _teacher_params(exp), batch)


def initial_set(exp: "experiment.Experiment") -> tuple[Any, dict, dict]:
  """The parametrisation, its initial learned params (data + raw step sizes) and static arrays."""
  cfg = exp.cfg
  c = exp.num_classes
  shape = SetShape(cfg.synthetic.n_per_class * c, cfg.data.max_len, exp.model.config.hidden_size, c,
                   cfg.synthetic.label_mode)
  syn = build(cfg.synthetic.kind, shape, cfg.synthetic.num_bases, cfg.synthetic.token_logit_scale,
              cfg.synthetic.candidates_per_position, cfg.synthetic.candidate_choice)
  if cfg.synthetic.kind == "tokens":
    if cfg.synthetic.init != "real":
      raise UserError("synthetic.kind='tokens' starts from real examples; use --config.synthetic.init=real")
    params, static = token_set(syn, exp.train, cfg.synthetic.n_per_class, cfg.synthetic.superpose, cfg.seed,
                               cfg.synthetic.vocab_size)
  else:
    idx = _initial_rows(exp)
    params, static = syn.init(*_initial_embeddings(exp, idx, shape), exp.train.labels[idx])
  if cfg.synthetic.attention_labels:
    syn, params = WithAttention(syn), {**params, "attention": attention_logits(_teacher_attention(exp))}
  lr = init_step_sizes(cfg.inner.lr, cfg.inner.steps, cfg.inner.lr_param)
  if cfg.inner.lr_groups != "global":  # [T, G]: only then is the parameter tree's shape needed
    groups = modeling.lr_groups(jax.eval_shape(exp.init_fn, jax.random.PRNGKey(0)), cfg.inner.lr_groups)
    lr = jnp.tile(lr[:, None], (1, len(groups)))
  learned = {"data": params, "lr": lr}
  return syn, learned, static
