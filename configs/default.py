"""Base config: every hyper-parameter of distill_jax lives here.

Dataset configs (`configs/sst2.py`, ...: the recipes in configs/recipes.py) and
`configs/paper.py:DATASET` (the course paper's setting) override some keys; the
command line overrides any key with `--config.KEY=VALUE`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = "distill"  # train | distill | evaluate
  c.seed = 0

  # Data. Empty strings mean the registry/environment defaults
  # ($DISTILL_JAX_DATA_DIR, else ../shared/data beside the repo; "hub" = Hugging Face hub).
  c.data = ml_collections.ConfigDict()
  c.data.dataset = "sst2"  # a registry name (docs/data.md) or a folder of <split>.jsonl.gz files
  c.data.data_dir = ""
  c.data.vocab = ""  # vocab.txt, a tokenizer directory or a hub id; "" = $DISTILL_JAX_VOCAB or bert-base-uncased
  c.data.cache_dir = ""
  c.data.train_split = ""  # "" = the registry's (e.g. test[:6000] for ag_news)
  c.data.eval_split = ""
  c.data.max_len = 64
  c.data.train_limit = 0  # use only N random rows (0 = all): for tests and smoke runs
  c.data.eval_limit = 0
  # Random training rows held out from all learning (distillation, baselines, full-data training): they pick
  # the full-data model's epoch, the baselines' step sizes and show distillation's progress. Never the eval split.
  c.data.holdout_rows = 1000

  c.model = ml_collections.ConfigDict()
  c.model.size = "tiny"  # tiny | mini | small | medium | base | minilm-l6 (ignored with `pretrained`)
  c.model.pretrained = ""  # HF checkpoint dir or hub id (config.json + weights)
  c.model.dropout = 0.1
  c.model.dtype = "float32"
  # Operand dtype of the dense layers' matmuls: "model" (= model.dtype) or "bfloat16", which
  # runs them 3-5× faster on AMX CPUs and GPUs (results, attention, activations, parameters
  # and optimizer state keep model.dtype; see distill_jax/models/matmul.py).
  c.model.matmul_dtype = "model"
  # What the classifier reads: "cls" (BERT's [CLS] state, the paper's) or "mean" (masked mean of
  # all final states), which a random-init model can learn from in tens of steps (docs/diagnosis.md).
  c.model.pooling = "cls"

  # θ0 distribution, shared by distillation and evaluation.
  c.init = ml_collections.ConfigDict()
  c.init.kind = "random"  # random (paper) | pretrained (body from model.pretrained, fresh head) | fixed
  c.init.fixed_word_embeddings = False  # same token-embedding table for every random θ0
  c.init.seed = 0

  # Full-data training (mode=train): the reference a distilled set is measured against.
  c.train = ml_collections.ConfigDict()
  c.train.optimizer = "adam"  # sgd | adam
  c.train.learning_rate = 1e-3
  c.train.momentum = 0.9
  c.train.weight_decay = 0.01
  c.train.warmup_steps = 100
  c.train.batch_size = 32
  c.train.epochs = 3
  c.train.patience = 2  # epochs without a held-out gain before stopping
  c.train.eval_batch_size = 256
  c.train.chunk_steps = 100  # optimizer steps per jitted scan between progress lines
  c.train.checkpoint_every = 500  # steps between saves of the training state (also at each epoch's end)

  # Synthetic set (mode=distill).
  c.synthetic = ml_collections.ConfigDict()
  c.synthetic.n_per_class = 10
  c.synthetic.kind = "direct"  # direct (Wang et al.) | addressable (Deng & Russakovsky) | tokens
  c.synthetic.num_bases = 0  # addressable: number of shared memories K
  # tokens: each position is a learned distribution over this many candidate tokens (the initial
  # examples' and the training set's most frequent), embedded through θ's word table, which it trains.
  c.synthetic.vocab_size = 2048
  c.synthetic.token_logit_scale = 10.0  # tokens: initial logit of each example's own token (others 0)
  c.synthetic.superpose = 1  # tokens: real examples superposed into each synthetic one at init
  c.synthetic.candidates_per_position = 0  # tokens: learned logits per position (0 = all vocab_size; sparse)
  # sparse tokens: "frequent" (each position's most frequent tokens) | "distinctive" (the class's most
  # distinctive tokens over all positions, spread over them: a small set that keeps what separates classes)
  c.synthetic.candidate_choice = "frequent"
  c.synthetic.init = "real"  # real (embedded real examples) | random (N(0, init_std))
  c.synthetic.init_std = 0.02
  c.synthetic.label_mode = "hard"  # hard | soft (learned softmax) | real (learned, unrestricted)
  # Learned attention labels (Maekawa et al. 2023): each example also carries a target attention
  # distribution per layer, head and query ([n, layers, heads, L, L] learned logits), and the inner loss
  # adds inner.attention_weight · KL(labels ‖ student attention). direct or tokens (superpose=1), init=real.
  c.synthetic.attention_labels = False
  # Whose attention the labels start from, on the set's initial real examples: a mode=train workdir
  # (its train_checkpoints/; Maekawa's teacher is fine-tuned on the full data) or "" = θ0 at init.seed
  # (the pretrained body with init.kind=pretrained).
  c.synthetic.attention_teacher = ""

  # Inner loop: the paper's momentum SGD with learned per-step step sizes.
  c.inner = ml_collections.ConfigDict()
  c.inner.steps = 10
  c.inner.optimizer = "sgd"  # sgd (momentum) | adam (differentiable)
  c.inner.momentum = 0.9
  c.inner.lr = 0.01  # initial step size
  c.inner.lr_param = "softplus"  # softplus | log
  c.inner.lr_groups = "global"  # global (one step size per step) | layer (per step and module: embeddings, each layer, pooler, head)
  c.inner.batch_size = 0  # synthetic minibatch per step; 0 = the whole synthetic set
  c.inner.remat = True
  # forward_over_reverse (fastest; saves inputs + gradient) | nothing_saveable | dots_saveable | ... (inner.REMAT_POLICIES)
  c.inner.remat_policy = "forward_over_reverse"
  c.inner.scan_unroll = 1
  # k > 1: the backward pass also keeps the carry only every k inner steps and replays one segment of k at a
  # time (memory ~ T/k + k steps instead of T, one more forward pass per step; k ≈ √T for long unrolls)
  c.inner.remat_segment = 0
  c.inner.backprop_steps = 0  # truncated BPTT: meta-gradient through the last k inner steps (0 = all)
  c.inner.random_window = False  # RaT-BPTT: the k backprop steps end at a random step (evaluation runs all T)
  c.inner.adam_eps = 1e-8  # inner Adam only; larger values smooth the meta-gradient
  # λ: the inner loss on a set with attention labels is CE + λ · KL(labels ‖ student attention), the KL
  # summed over keys and averaged over examples, layers, heads and real query positions (modeling.attention_kl)
  c.inner.attention_weight = 1.0

  # Outer loop: Adam on the synthetic set and step sizes.
  c.outer = ml_collections.ConfigDict()
  c.outer.steps = 300
  c.outer.lr = 1e-3  # for the synthetic data
  c.outer.lr_lr = 1e-2  # for the raw step sizes
  c.outer.label_lr = 0.0  # for learned labels (synthetic.label_mode soft/real); 0 = outer.lr
  c.outer.clip = 1.0  # global-norm clipping of the meta-gradient (0 = off)
  c.outer.real_batch_size = 64
  # The meta-loss's real rows: only training rows of at least this many tokens ([CLS], [SEP] included; 0 = all).
  # SST-2 trains on the phrases of its parse trees but is scored on whole sentences: its recipe uses 17
  # (configs/recipes.py, docs/diagnosis.md section 8).
  c.outer.real_min_tokens = 0
  c.outer.inits_per_step = 1
  c.outer.warmup_steps = 0  # linear warm-up of both outer learning rates
  c.outer.eval_every = 0  # score the set on held-out training rows every k steps (0 = never)
  c.outer.eval_seeds = 2
  c.outer.eval_rows = 500  # random held-out rows (the first of data.holdout_rows) those periodic checks score
  c.outer.log_every = 10
  c.outer.checkpoint_every = 50

  # Devices: K inits and the real batch are sharded over a 1-D "data" mesh.
  c.parallel = ml_collections.ConfigDict()
  c.parallel.num_devices = 1  # 1 = no mesh; 0 = every device (all hosts); N = the first N devices
  c.parallel.distributed = False  # call jax.distributed.initialize() (multi-host; SLURM/TPU auto-detected)

  # Evaluation of a distilled set (mode=evaluate) and its baselines.
  c.evaluate = ml_collections.ConfigDict()
  c.evaluate.checkpoint = ""  # workdir of a distillation run (or its checkpoints/ or distilled/ folder)
  c.evaluate.after_distill = False  # mode=distill ends with this evaluation of the set (result_evaluate.json)
  c.evaluate.seeds = 5
  c.evaluate.init_kind = ""  # "" = the θ0 distribution used for distillation
  c.evaluate.baselines = True  # real subsets of the same size (evaluate.coresets), step size tuned on a grid
  # How those subsets are chosen (distill_jax/coreset.py): random | kcenter | herding; each adds <method>_subset.
  c.evaluate.coresets = ("random",)
  # kcenter/herding choose among this many random training rows (0 = all; never data.holdout_rows): features cost a forward pass
  c.evaluate.coreset_pool = 0
  # A random real subset whose token ids (2 B each) take no more bytes than the set (equal_storage_subset)
  c.evaluate.equal_storage = False
  c.evaluate.equal_storage_batch_size = 256  # its inner minibatch when inner.batch_size=0 and it has more rows
  c.evaluate.lr_grid = (0.001, 0.003, 0.01, 0.03, 0.1)
  c.evaluate.ceiling_batch_size = 64  # real-data T-step ceiling with this minibatch (0 = skip)
  # A folder where ceilings are kept and reused by evaluations with the same data, model, inner loop and grid
  # (evaluate.ceiling_key): every budget of a dataset shares one. "" = measure it every time.
  c.evaluate.ceiling_cache = ""
  c.evaluate.decode = True  # nearest-token decoding of the synthetic set, evaluated as a training set
  c.evaluate.batch_size = 256
  return c
