"""The spec's schema: typed sections with the paper's values as defaults (§IV, Appendix A),
unknown keys forbidden, cross-field rules, the resolved protocol (`ExperimentSpec.lr`,
`resets_optimizer`, ...) and which fields make up a run's identity."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union, get_args

from annotated_types import Ge, Gt, Le, Lt
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from plasticity_ray.model.sizes import ModelSize, resolve_size

Language = Literal["en", "zh", "fr", "ja", "es", "de", "pt", "ru", "vi"]
ALL_LANGUAGES: tuple[str, ...] = get_args(Language)
PAPER_LANGUAGE_ORDER = ("en", "zh", "fr", "ja", "es", "de", "pt", "ru")  # the paper's cycle

_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(value: Any) -> Any:
    """Accept 5000000000, 5e9, "5e9", "5B", "500M" or "524_288" for token and row counts."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"must be a whole number, got {value}")
        return int(value)
    if isinstance(value, str):
        text = value.strip().replace("_", "").replace(",", "")
        scale = 1.0
        if text and text[-1].lower() in _SUFFIXES:
            scale, text = _SUFFIXES[text[-1].lower()], text[:-1]
        try:
            number = float(text) * scale
        except ValueError:
            raise ValueError(f"must be a count such as 5e9, 5B or 524288, got {value!r}") from None
        if not math.isfinite(number) or not number.is_integer():
            raise ValueError(f"must be a whole number, got {value!r}")
        return int(number)
    return value


def _check_size(name: str) -> str:
    resolve_size(name)
    return name


def _unique(items: list) -> list:
    repeated = sorted({str(x) for x in items if items.count(x) > 1})
    if repeated:
        raise ValueError(f"lists {', '.join(repeated)} more than once")
    return items


Count = Annotated[int, BeforeValidator(parse_count), Gt(0)]
PositiveInt = Annotated[int, Gt(0)]
PositiveFloat = Annotated[float, Gt(0)]
Fraction = Annotated[float, Ge(0), Lt(1)]
SizeName = Annotated[str, AfterValidator(_check_size)]
Diagnostic = Literal["weight_magnitude", "dormant_units", "attention_entropy", "matrix_rank", "grama", "weight_distance"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Marks a field or a whole section that does not change what is trained: runs that differ only
# there are the same run (one directory; changing it and running again resumes). Every other
# field is part of the run's identity (`run_identity`).
NOT_TRAINED: dict = {"run_identity": False}


class ModelSpec(_Section):
    size: SizeName = "5M"  # a Table I name, or L<layers>-d<hidden> for a custom size
    # A learnable attention-sink token (Xiao et al. 2024) prepended to every sequence, so heads have
    # somewhere to put attention they do not need (a remedy for lazy heads).
    attention_sink: bool = False
    # The MLP's activation: GeLU (the paper's) or deep Fourier features (Lewandowski et al. 2025):
    # [sin z, cos z] of half as many pre-activations, so the down projection reads as many as GeLU's.
    activation: Literal["gelu", "fourier"] = "gelu"
    # A LayerNorm before each nonlinearity: on the MLP's pre-activations and on each head's queries and
    # keys (the softmax's inputs). Normalize-and-Project (Lyle et al. 2024) inserts them; its projection
    # (`mitigations: [{name: normalize_and_project}]`) then holds the norms of the layers feeding them.
    normalize_activations: bool = False

    @property
    def resolved(self) -> ModelSize:
        return resolve_size(self.size)


class BuiltinSource(_Section):
    """The small offline corpus shipped with the package (demos and tests)."""

    kind: Literal["builtin"] = "builtin"


class HFSource(_Section):
    """A Hugging Face dataset: a Hub id (the token comes from HF_TOKEN) or a local dataset directory.

    Each language reads its config (`configs`, by default the language code, as in CulturaX) and
    `split`. `reader: auto` reads Parquet files matching `data_files` (a glob with {config}, e.g.
    CulturaX's en/en_part_00000.parquet) in parallel with Ray Data when there are any, and otherwise
    loads the config with the `datasets` library (JSON Lines, CSV, Parquet, Arrow, a README's
    `configs:`; `streaming` for Hub datasets too big to download first) and hands it to Ray Data.
    """

    kind: Literal["hf"]
    dataset: str = "uonlp/CulturaX"
    configs: dict[Language, str] = Field(default_factory=dict)
    split: str = "train"
    text_field: str = "text"
    reader: Literal["auto", "parquet", "datasets"] = "auto"
    data_files: str = "{config}/*.parquet"  # the Parquet reader's glob inside the dataset
    streaming: bool = False  # the datasets reader on a Hub dataset: stream it instead of downloading it first
    revision: str | None = None  # a Hub branch, tag or commit

class FilesSource(_Section):
    """The user's own .txt / .jsonl / .parquet files (paths or globs) per language."""

    kind: Literal["files"]
    paths: dict[Language, Annotated[list[str], Field(min_length=1)]]
    text_field: str = "text"


Source = Annotated[Union[BuiltinSource, HFSource, FilesSource], Field(discriminator="kind")]


def _shared_sources(source: "Source", languages: list[str]) -> str | None:
    """Why two languages would read the same documents (the probe language's leaking into a
    training pool, or one language's mix posing as several), or None."""
    if isinstance(source, HFSource):
        if "{config}" not in source.data_files and source.reader != "datasets":
            return (f"source.data_files: {source.data_files!r} has no {{config}}, so every language would "
                    "read the same files")
        read_by: dict[str, list[str]] = {}
        for language in languages:
            read_by.setdefault(source.configs.get(language, language), []).append(language)
        for config, langs in read_by.items():
            if len(langs) > 1:
                return (f"source.configs: {', '.join(langs)} all read config {config!r} of {source.dataset!r}; "
                        "each language needs its own documents")
    if isinstance(source, FilesSource):
        listed_by: dict[str, str] = {}
        for language, patterns in source.paths.items():
            for pattern in patterns:
                first = listed_by.setdefault(pattern, language)
                if first != language:
                    return f"source.paths: {pattern!r} is listed for both {first} and {language}"
    return None


class DataSpec(_Section):
    source: Source = Field(default_factory=BuiltinSource)
    tokenizer: Literal["qwen3", "byte"] = "qwen3"
    languages: Annotated[list[Language], Field(min_length=1), AfterValidator(_unique)] = list(PAPER_LANGUAGE_ORDER)
    probe_language: Language = "vi"
    seq_len: Annotated[int, Gt(1)] = 2048
    # Pool caps: one number for every language, or one per language ({en: 100B, ..., vi: 20B}); a
    # mapping names every training language and the probe language.
    validation_tokens: Count | dict[Language, Count] = 1_000_000_000  # held-out pool (the paper: 1B each)
    # hf and files sources: the share of documents held out for validation (builtin has its own split).
    validation_fraction: Annotated[float, Gt(0), Lt(1)] = 0.01
    train_tokens: Count | dict[Language, Count] | None = None  # training pool; None: all the source has

    @model_validator(mode="after")
    def _probe_language_is_held_out(self) -> "DataSpec":
        if self.probe_language in self.languages:
            raise ValueError(f"probe_language {self.probe_language!r} must not be one of the training languages")
        shared = _shared_sources(self.source, [*self.languages, self.probe_language])
        if shared:
            raise ValueError(shared)
        return self

    def pool_tokens(self, language: str, split: str) -> int | None:
        """The cap of one pool (split "train" or "validation"); None: no cap."""
        caps = self.train_tokens if split == "train" else self.validation_tokens
        return caps.get(language) if isinstance(caps, dict) else caps


class OnsetConfirmed(_Section):
    """Stop a group of seeds once the rise of its cycle-end curve after the minimum is confirmed by a
    sequential test (`analysis.adaptive`), after training this many more cycles."""

    margin_cycles: Annotated[int, Ge(0)] = 2
    level: Annotated[float, Gt(0), Lt(1)] = 0.9  # 1 − the chance that a flat curve is ever stopped


class StopSpec(_Section):
    onset_confirmed: OnsetConfirmed | None = None


class ScheduleSpec(_Section):
    mode: Literal["continual", "stationary"] = "continual"
    # Continual: cycles of one task per language. Stationary: cycles × languages chunks of the mixture.
    cycles: PositiveInt = 48
    tokens_per_task: Count = 5_000_000_000  # stationary: the chunk (data quota and checkpoint unit)
    warmup_fraction: Fraction = 0.05  # of a task's steps (§IV-B: 5% of 9,537 = 477)
    # None: the mode's protocol. Continual (§IV-B): a fresh AdamW and a restarted warm-up at every
    # task. Stationary (§V-B): one warm-up at the start of the run, AdamW never reset.
    reset_optimizer_per_task: bool | None = None
    restart_warmup_per_task: bool | None = None
    # Stationary mode only: relative weight of each language in the mixture (default uniform).
    mixture_weights: dict[Language, Annotated[float, Gt(0)]] | None = None
    # Opt-in: end runs early (the paper trains every task). What is trained up to the stop is the
    # same, so a stopped run continues when the spec without the stop runs it again.
    stop: StopSpec | None = Field(None, json_schema_extra=NOT_TRAINED)


class OptimizerSpec(_Section):
    lr: Annotated[float, Gt(0)] | Literal["paper"] = "paper"  # "paper": Appendix A's rule for the size
    betas: tuple[Fraction, Fraction] = (0.9, 0.95)
    weight_decay: Annotated[float, Ge(0)] = 0.1
    eps: Annotated[float, Gt(0)] = 1e-8
    grad_clip: Annotated[float, Gt(0)] | None = None  # the paper does not clip gradients


class BatchSpec(_Section):
    global_tokens: Count = 524_288  # 0.5M tokens = 256 sequences of 2,048
    # Sequences per worker per forward pass: gradient accumulation, the same mathematics.
    micro_batch: PositiveInt | Literal["auto"] = Field("auto", json_schema_extra=NOT_TRAINED)


class NearMinimum(_Section):
    """Probe the extended points only in the `cycles` cycles each side of the cycle-end curve's
    minimum, decided while the group of seeds trains (`analysis.adaptive`); the others are kept as
    weights until they cannot be near it, then released."""

    cycles: PositiveInt = 2


class ExtendedProbing(_Section):
    """Appendix B's extended probing: also probe after these languages (the paper: zh and de; ru
    ends the cycle), in every cycle, only in cycles `from`..`to` (1-based, inclusive), or only near
    the minimum (`near_minimum`, what the paper did by hand)."""

    languages: Annotated[list[Language], Field(min_length=1), AfterValidator(_unique)]
    cycles: tuple[PositiveInt, PositiveInt] | None = None
    near_minimum: NearMinimum | None = None

    def covers(self, cycle: int) -> bool:
        """Whether 0-based `cycle` is in the range."""
        return self.cycles is None or self.cycles[0] <= cycle + 1 <= self.cycles[1]


class ProbeSpec(_Section):
    enabled: bool = True
    tokens: Count = 5_000_000_000
    eval_every: PositiveInt = 95  # probe steps between validation measurements
    eval_sequences: PositiveInt = 1280
    # Each mode reads its own fields (so one spec can sweep schedule.mode): continual the first two,
    # stationary every_tokens.
    every_cycles: PositiveInt = 1  # continual: probe at the end of every k-th cycle
    extended: ExtendedProbing | None = None  # continual: probes after chosen languages too
    # Stationary: a probe every this many training tokens (a multiple of schedule.tokens_per_task);
    # None: every schedule.tokens_per_task (§V-B: every 5B).
    every_tokens: Count | None = None
    # False (§IV-A): each probe trains on a fresh seeded random subsample of the probe pool. True:
    # every probe point sees the same rows in the same order (less sampling noise, one sample only).
    same_data_order: bool = False
    # The AUC integrates the evaluations made during probe training (§IV-A: every 95 steps and the
    # last); the step-0 evaluation (zero-shot, before any learning) is stored but left out unless this is on.
    auc_includes_step0: bool = False
    baseline: bool = True  # also probe a freshly initialised model ("probe language alone")
    # Probes of the same checkpoint (each a fresh copy of the model on its own probe-data draw):
    # their spread is the probe noise that onset intervals and the verdict need. 1: the paper's.
    replicates: PositiveInt = 1


class DiagnosticsSpec(_Section):
    enabled: Annotated[list[Diagnostic], AfterValidator(_unique)] = Field(
        default_factory=lambda: ["weight_magnitude", "dormant_units", "attention_entropy"]
    )
    dormant_threshold: Annotated[float, Gt(0)] = 0.01
    dormant_sequences: PositiveInt = 256
    entropy_language: Language = "ru"
    entropy_sequences: PositiveInt = 512
    entropy_first_query: PositiveInt = 256


class ResourcesSpec(_Section):
    workers: PositiveInt = 1
    gpus_per_worker: Annotated[float, Ge(0)] = 1
    cpus_per_worker: Annotated[float, Gt(0)] = 1
    probe_gpus: Annotated[float, Ge(0)] = 1
    probe_cpus: Annotated[float, Gt(0)] = 1
    max_concurrent_probes: PositiveInt = 2
    # Custom Ray resources the probe service's actor asks for, to place it (e.g. {on_demand: 0.01}
    # keeps it off spot nodes); it is restarted elsewhere when its node is lost.
    service_resources: dict[str, Annotated[float, Gt(0)]] = Field(default_factory=dict)


class TrainSpec(_Section):
    log_every: PositiveInt = Field(10, json_schema_extra=NOT_TRAINED)  # steps between metric rows in storage
    # Steps between ray.train.report calls (every rank; Ray Train consumes about one report per 2 s,
    # and a worker blocks until its previous report is taken, so reporting often slows short steps).
    report_every: PositiveInt = Field(200, json_schema_extra=NOT_TRAINED)
    # Steps; a checkpoint is also written at every task end.
    checkpoint_every: PositiveInt = Field(500, json_schema_extra=NOT_TRAINED)
    # The newest K; probe-point checkpoints live until released.
    keep_checkpoints: PositiveInt = Field(2, json_schema_extra=NOT_TRAINED)
    # Worker-group restarts from the last checkpoint.
    max_failures: Annotated[int, Ge(0)] = Field(3, json_schema_extra=NOT_TRAINED)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    # torch.compile the model (the same mathematics); auto: on GPU only.
    compile: bool | Literal["auto"] = Field("auto", json_schema_extra=NOT_TRAINED)
    # Validation loss of the language being trained (stationary: mean over the languages), every
    # `eval_every` steps on a seeded sample of `eval_sequences` validation rows; 0 = off. Appendix
    # A's LR grid scores a run by the mean of its last 10 such losses.
    eval_every: Annotated[int, Ge(0)] = Field(0, json_schema_extra=NOT_TRAINED)
    eval_sequences: PositiveInt = Field(64, json_schema_extra=NOT_TRAINED)


class AlarmSpec(_Section):
    """Online plasticity alarms: signals measured at every task end from what training already has,
    and an alarm row when one crosses its threshold (None turns that alarm off)."""

    enabled: bool = True
    window: PositiveInt = 50  # steps: the adaptation signal compares the loss after this many steps
    near_zero: PositiveFloat = 0.01  # |GeLU output| below this counts as a near-zero activation
    grad_norm_ratio_above: PositiveFloat | None = 3.0  # task's mean gradient norm ÷ the first task's
    near_zero_fraction_above: Annotated[float, Gt(0), Lt(1)] | None = 0.5  # of MLP activations, last batch
    # Loss drop over a task's first `window` steps ÷ the same language's drop on its first visit.
    adaptation_ratio_below: PositiveFloat | None = 0.5


class MlflowTracking(_Section):
    """One MLflow run per trial in `experiment` (None: the spec's name) at `tracking_uri` (None:
    MLflow's own default, MLFLOW_TRACKING_URI)."""

    tracking_uri: str | None = None
    experiment: str | None = None


class WandbTracking(_Section):
    """One Weights & Biases run per trial. offline: written next to the run (`wandb sync` uploads it
    later); online needs WANDB_API_KEY or `wandb login`."""

    project: str
    entity: str | None = None
    mode: Literal["online", "offline"] = "online"
    dir: str | None = None  # where W&B keeps its files; None: the run directory


class TrackingSpec(_Section):
    """Experiment trackers that receive each run's rows as they land in storage (off by default)."""

    mlflow: MlflowTracking | None = None
    wandb: WandbTracking | None = None


class DebugSpec(_Section):
    fail_at_step: Annotated[int, Ge(0)] | None = None  # crash one worker once at this global step
    fail_by: Literal["exception", "sigkill"] = "exception"  # sigkill: the worker process dies outright
    # Exercise onset-confirmed stops: the rise counts as confirmed at this look (cycle ends measured).
    confirm_onset_at_look: Annotated[int, Ge(4)] | None = None  # the first look the test takes
    # Seconds every worker sleeps after each task: a tiny model's tasks take well under a second, and
    # the adaptive protocol's margin (in cycles) assumes tasks far longer than a probe, as real ones are.
    task_pause_s: Annotated[float, Ge(0)] = 0.0


class OptunaSearchSpec(_Section):
    """An Optuna (TPE) search over one numeric spec field, run separately at every grid point."""

    parameter: str = "optimizer.lr"  # a dotted spec path
    low: PositiveFloat
    high: PositiveFloat
    log: bool = True  # sample on a log scale (learning rates)
    samples: PositiveInt = 8  # trials per grid point
    metric: Literal["val_score", "last_train_loss"] = "val_score"  # minimised

    @model_validator(mode="after")
    def _ordered(self) -> "OptunaSearchSpec":
        if self.low >= self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        if not is_spec_path(self.parameter):
            raise ValueError(f"parameter: {self.parameter!r} is not a field of the spec")
        return self


class SweepSpec(_Section):
    # Dotted spec paths to the values each takes, e.g. {"model.size": ["5M", "12M"], "seed": [0, 1]}.
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)
    # Named configurations crossed with the grid, e.g. a baseline and each mitigation:
    # {none: {}, shrink_perturb: {mitigations: [{name: shrink_perturb}]}, sink: {model.attention_sink: true}}
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Explicit points run besides the grid's product, e.g. [{model.size: 39M, optimizer.lr: paper}]
    # (crossed with the variants like the grid's points).
    points: list[dict[str, Any]] = Field(default_factory=list)
    search: OptunaSearchSpec | None = None
    # Trials at once; None: as many as the cluster's GPUs (or CPUs) hold next to the probes.
    max_concurrent_trials: PositiveInt | None = None
    max_failures: Annotated[int, Ge(0)] = 2  # retries of a failed trial (Tune), on top of train.max_failures


class WeightClipping(_Section):
    """Elsayed et al. 2024: after every step, clip each weight to ±kappa × its initialisation scale
    (the normal init's standard deviation); parameters initialised to constants are left alone."""

    name: Literal["weight_clipping"]
    kappa: PositiveFloat = 3.0


class ShrinkPerturb(_Section):
    """Ash & Adams 2020: at the end of every task, θ ← shrink·θ + noise·θ₀ with θ₀ a fresh
    initialisation (seeded by the run's seed and the task)."""

    name: Literal["shrink_perturb"]
    every: Literal["task"] = "task"
    shrink: Annotated[float, Gt(0), Le(1)] = 0.8
    noise: Annotated[float, Ge(0)] = 0.01


class ReDo(_Section):
    """Sokar et al. 2023: every `every` steps, MLP units whose score (Eqs. 3-4: mean |activation| on
    the step's batch ÷ the layer mean) is ≤ `threshold` get fresh incoming weights, zero outgoing
    weights and zeroed Adam moments."""

    name: Literal["redo"]
    every: PositiveInt = 1000
    threshold: Annotated[float, Ge(0)] = 0.0


class ContinualBackprop(_Section):
    """Dohare et al. 2024: every step, each MLP unit's contribution utility
    u ← decay·u + (1 − decay)·|h|·Σ|w_out| is updated, and a fraction `replacement_rate` of the
    units older than `maturity_threshold` steps — those with the lowest utility — is re-initialised
    (fresh incoming weights, zero outgoing weights, zeroed Adam moments, age and utility 0)."""

    name: Literal["continual_backprop"]
    replacement_rate: Annotated[float, Gt(0), Lt(1)] = 1e-4
    maturity_threshold: PositiveInt = 100
    decay_rate: Annotated[float, Ge(0), Lt(1)] = 0.99


class L2Init(_Section):
    """Kumar, Marklund and Van Roy 2024 (regenerative regularization, "L2 Init"): the loss gets λ·‖θ − θ₀‖² over every
    parameter, θ₀ the run's initial weights. The paper tunes λ per benchmark (10⁻²…10⁻⁵)."""

    name: Literal["l2_init"]
    strength: PositiveFloat = 1e-2


class SpectralRegularization(_Section):
    """Lewandowski et al. 2025: the loss gets λ·Σ_W (σ(W)^k − σ₀(W)^k)² over the blocks' weight
    matrices, σ their largest singular value (power iteration, `power_iterations` per update, its
    vectors kept in the checkpoint), σ₀ its value at initialisation."""

    name: Literal["spectral_regularization"]
    strength: PositiveFloat = 1e-4
    exponent: PositiveInt = 2
    power_iterations: PositiveInt = 1


class ActiveForgetting(_Section):
    """Chen et al. 2023: every `every` updates the token embeddings are re-drawn from their
    initialisation and their optimizer state cleared. The embedding is also our output head (tied), so
    the head is reset with it, as in the paper's RoBERTa."""

    name: Literal["active_forgetting"]
    every: PositiveInt = 1000


class ResetControl(_Section):
    """A negative control, not a mitigation: at the start of every task after the first the whole model is
    re-initialised (a fresh draw seeded by the run's seed and the task) and its optimizer state
    cleared. It cannot lose plasticity, so its verdict must read "not distinguishable from noise"."""

    name: Literal["reset_control"]


class NormalizeAndProject(_Section):
    """Lyle et al. 2024 (NeurIPS): after every update, each layer that feeds a normalization (the MLP's
    up projection; the query and the key projections) is scaled back to the norm it was initialised
    with, weights and bias together: θ_l ← ‖θ_l,0‖·θ_l/‖θ_l‖. Needs `model.normalize_activations`,
    which inserts those normalizations; the layers are then scale-invariant, so the projection leaves
    the function unchanged and holds their effective learning rate at the schedule's."""

    name: Literal["normalize_and_project"]


class ChurnReduction(_Section):
    """C-CHAIN (Tang, Berseth et al., ICML 2025, "Mitigating Plasticity Loss in Continual Reinforcement
    Learning by Reducing Churn"): the loss gets λ·mean((f_θ(x) − f_θ₋(x))²) over the logits of a
    reference batch x outside the step's batch (the previous step's rows), θ₋ the weights before the
    previous update. λ starts at `initial_strength` and, after `warmup_steps` updates of a task, is set
    every update so the penalty stays `relative_scale` of the loss: λ = c·mean|L|/mean L_churn over the
    last `window` updates (all reset at every task, as the authors' code does per task). The defaults
    are the authors' DeepMind Control settings (0.05, 100, 50, 100), their iterations read as our
    updates; their code uses 0.01 on MinAtar and 10⁴ on ProcGen."""

    name: Literal["c_chain"]
    relative_scale: PositiveFloat = 0.05
    initial_strength: PositiveFloat = 100.0
    warmup_steps: PositiveInt = 50
    window: PositiveInt = 100


Mitigation = Annotated[Union[WeightClipping, ShrinkPerturb, ReDo, ContinualBackprop, L2Init, SpectralRegularization,
                             ActiveForgetting, ResetControl, NormalizeAndProject, ChurnReduction],
                       Field(discriminator="name")]
MITIGATION_NAMES = ("weight_clipping", "shrink_perturb", "redo", "continual_backprop", "l2_init", "spectral_regularization",
                    "active_forgetting", "reset_control", "normalize_and_project", "c_chain")


class ExperimentSpec(_Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", json_schema_extra=NOT_TRAINED)]
    seed: Annotated[int, Ge(0)] = 0
    # A local directory, a file system mounted on every node of a cluster (NFS), or object storage
    # (s3://bucket/prefix, gs://bucket/prefix).
    storage_path: str = Field("runs", json_schema_extra=NOT_TRAINED)
    # Seconds a write to object storage that does not answer is retried before the work stops (a
    # run then continues from its last checkpoint in storage when started again).
    storage_retry_s: Annotated[float, Ge(0)] = Field(120.0, json_schema_extra=NOT_TRAINED)
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    batch: BatchSpec = Field(default_factory=BatchSpec)
    # Probes and diagnostics measure copies; their rows record the settings they were measured with.
    probe: ProbeSpec = Field(default_factory=ProbeSpec, json_schema_extra=NOT_TRAINED)
    diagnostics: DiagnosticsSpec = Field(default_factory=DiagnosticsSpec, json_schema_extra=NOT_TRAINED)
    # Where and how fast, not what: the same global batch on any number of workers.
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, json_schema_extra=NOT_TRAINED)
    train: TrainSpec = Field(default_factory=TrainSpec)
    sweep: SweepSpec = Field(default_factory=SweepSpec, json_schema_extra=NOT_TRAINED)
    debug: DebugSpec = Field(default_factory=DebugSpec, json_schema_extra=NOT_TRAINED)
    alarms: AlarmSpec = Field(default_factory=AlarmSpec, json_schema_extra=NOT_TRAINED)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, json_schema_extra=NOT_TRAINED)
    mitigations: list[Mitigation] = Field(default_factory=list)  # applied in the listed order
    # The run's name in tables and figures (a sweep sets its variant's name).
    label: str | None = Field(None, json_schema_extra=NOT_TRAINED)

    @model_validator(mode="after")
    def _consistent(self) -> "ExperimentSpec":
        problems = []
        scheme = self.storage_path.split("://", 1)[0] if "://" in self.storage_path else "file"
        if scheme not in ("file", "s3", "gs", "gcs"):
            problems.append(f"storage_path: {self.storage_path!r}: use a local or mounted directory, s3://bucket/prefix "
                            "or gs://bucket/prefix")
        seq_len = self.data.seq_len
        if self.batch.global_tokens % seq_len:
            problems.append(f"batch.global_tokens: {self.batch.global_tokens} is not a multiple of data.seq_len {seq_len}")
        elif self.global_sequences % self.resources.workers:
            problems.append(
                f"resources.workers: {self.global_sequences} sequences per batch do not split evenly "
                f"over {self.resources.workers} workers"
            )
        for name, budget in (("schedule.tokens_per_task", self.schedule.tokens_per_task), ("probe.tokens", self.probe.tokens)):
            if budget < self.batch.global_tokens:
                problems.append(f"{name}: {budget} tokens is less than one batch ({self.batch.global_tokens} tokens)")
        entropy_on = "attention_entropy" in self.diagnostics.enabled
        if entropy_on and self.diagnostics.entropy_first_query >= seq_len:
            problems.append(
                f"diagnostics.entropy_first_query: {self.diagnostics.entropy_first_query} must be below data.seq_len {seq_len}"
            )
        measured = self.probe.enabled and entropy_on
        if measured and self.diagnostics.entropy_language not in (*self.data.languages, self.data.probe_language):
            problems.append(
                f"diagnostics.entropy_language: {self.diagnostics.entropy_language!r} is neither a training language "
                "nor the probe language, so it has no prepared validation set"
            )
        extended = self.probe.extended
        stray = [lang for lang in extended.languages if lang not in self.data.languages] if extended else []
        if stray:
            problems.append(f"probe.extended.languages: {', '.join(stray)} not in data.languages")
        if extended and extended.cycles and extended.cycles[0] > extended.cycles[1]:
            problems.append(f"probe.extended.cycles: from {extended.cycles[0]} is after to {extended.cycles[1]}")
        elif extended and extended.cycles and extended.cycles[0] > self.schedule.cycles:
            problems.append(f"probe.extended.cycles: starts after the last cycle ({self.schedule.cycles})")
        problems += self._adaptive_problems()
        unit_surgery = [m.name for m in self.mitigations if m.name in ("redo", "continual_backprop")]
        if self.model.activation == "fourier" and unit_surgery:
            problems.append(f"mitigations: {', '.join(unit_surgery)} re-initialise GeLU units; with model.activation: "
                            "fourier each pre-activation feeds a sine and a cosine, which they do not handle")
        if any(m.name == "normalize_and_project" for m in self.mitigations) and not self.model.normalize_activations:
            problems.append("mitigations: normalize_and_project projects the layers that feed a normalization; set "
                            "model.normalize_activations: true (it inserts them, as Lyle et al. do)")
        if self.probe.replicates > 1 and self.probe.same_data_order:
            problems.append(f"probe.replicates: {self.probe.replicates} replicates with probe.same_data_order would "
                            "all train on the same rows; replicates need their own draws (same_data_order: false)")
        for name in ("train_tokens", "validation_tokens"):
            caps = getattr(self.data, name)
            missing = [lang for lang in (*self.data.languages, self.data.probe_language)
                       if isinstance(caps, dict) and lang not in caps]
            if missing:
                problems.append(f"data.{name}: no entry for {', '.join(missing)} (a per-language mapping names "
                                "every training language and the probe language)")
        every = self.probe.every_tokens
        if self.schedule.mode == "stationary" and every is not None and every % self.schedule.tokens_per_task:
            problems.append(f"probe.every_tokens: {every} is not a multiple of schedule.tokens_per_task "
                            f"{self.schedule.tokens_per_task}")
        if self.schedule.mixture_weights is not None:
            if self.schedule.mode != "stationary":
                problems.append("schedule.mixture_weights: only used in stationary mode")
            stray = [lang for lang in self.schedule.mixture_weights if lang not in self.data.languages]
            if stray:
                problems.append(f"schedule.mixture_weights: {', '.join(stray)} not in data.languages")
        if self.train.eval_every % self.train.log_every:
            problems.append(
                f"train.eval_every: {self.train.eval_every} is not a multiple of train.log_every {self.train.log_every} "
                "(validation losses go into the metric rows)"
            )
        search = self.sweep.search
        if search is not None and search.parameter in self.sweep.grid:
            problems.append(f"sweep.search.parameter: {search.parameter} is also in sweep.grid; search it or list it")
        if search is not None and self.sweep.points:
            problems.append("sweep.points: cannot be combined with sweep.search (Optuna runs at the grid's points)")
        if search is not None and search.metric == "val_score" and not self.train.eval_every:
            problems.append("sweep.search.metric: val_score needs train.eval_every > 0")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def global_sequences(self) -> int:
        return self.batch.global_tokens // self.data.seq_len

    @property
    def steps_per_task(self) -> int:
        """Optimizer steps per task instance: the paper's 5B tokens / 0.5M-token batches = 9,537."""
        return math.ceil(self.schedule.tokens_per_task / self.batch.global_tokens)

    @property
    def probe_steps(self) -> int:
        return math.ceil(self.probe.tokens / self.batch.global_tokens)

    @property
    def warmup_steps(self) -> int:
        return math.ceil(self.schedule.warmup_fraction * self.steps_per_task)

    @property
    def resets_optimizer(self) -> bool:
        """A fresh AdamW at every task: the continual protocol's default, never the stationary one's."""
        reset = self.schedule.reset_optimizer_per_task
        return self.schedule.mode == "continual" if reset is None else reset

    @property
    def restarts_warmup(self) -> bool:
        """The warm-up restarts at every task (continual default), or runs once at the start (stationary)."""
        restart = self.schedule.restart_warmup_per_task
        return self.schedule.mode == "continual" if restart is None else restart

    @property
    def tasks_per_probe(self) -> int:
        """Stationary mode: chunks between probes."""
        every = self.probe.every_tokens or self.schedule.tokens_per_task
        return every // self.schedule.tokens_per_task

    def _adaptive_problems(self) -> list[str]:
        """The adaptive policies read the curve of cycle-end probes: every cycle end must be one."""
        problems = []
        extended = self.probe.extended
        needs = [name for name, on in (("probe.extended.near_minimum", extended and extended.near_minimum),
                                       ("schedule.stop.onset_confirmed", self.onset_stop)) if on]
        for name in needs:
            if self.schedule.mode != "continual" or not self.probe.enabled or self.probe.every_cycles != 1:
                problems.append(f"{name}: needs continual mode with a probe at every cycle end (probe.enabled, "
                                "probe.every_cycles: 1)")
        if extended and extended.near_minimum and extended.cycles:
            problems.append("probe.extended.cycles: near_minimum chooses the cycles itself; set one or the other")
        if extended and extended.near_minimum and "weight_distance" in self.diagnostics.enabled:
            problems.append("diagnostics.enabled: weight_distance compares each probe point with the one measured "
                            "before it, which probe.extended.near_minimum measures out of order")
        return problems

    @property
    def onset_stop(self) -> OnsetConfirmed | None:
        """schedule.stop.onset_confirmed, if the spec stops its groups once their onset is confirmed."""
        return self.schedule.stop.onset_confirmed if self.schedule.stop else None

    @property
    def tasks(self) -> int:
        return self.schedule.cycles * len(self.data.languages)

    @property
    def lr(self) -> float:
        return self.model.resolved.paper_lr if self.optimizer.lr == "paper" else self.optimizer.lr


def _identity(section: type[BaseModel], values: dict) -> dict:
    out = {}
    for name, value in values.items():
        info = section.model_fields[name]
        if info.json_schema_extra == NOT_TRAINED:
            continue
        inner = info.annotation
        nested = isinstance(inner, type) and issubclass(inner, _Section) and isinstance(value, dict)
        out[name] = _identity(inner, value) if nested else value
    return out


def run_identity(spec: ExperimentSpec) -> dict:
    """What a run trains: every field not marked NOT_TRAINED, with the values they resolve to (the
    paper's LR rule as its number, the mode's default resets as booleans), so two specs that train
    the same thing have the same identity."""
    identity = _identity(ExperimentSpec, spec.model_dump(mode="json"))
    identity["optimizer"]["lr"] = spec.lr
    identity["schedule"]["reset_optimizer_per_task"] = spec.resets_optimizer
    identity["schedule"]["restart_warmup_per_task"] = spec.restarts_warmup
    return identity


def is_spec_path(path: str) -> bool:
    """Whether a dotted path names a field (not a section) of the spec."""
    model: Any = ExperimentSpec
    for part in path.split("."):
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return False
        if part == "source":
            return True  # its fields depend on the source kind; the grid points are validated anyway
        model = model.model_fields[part].annotation
    return not (isinstance(model, type) and issubclass(model, BaseModel))


# Every key a spec may hold, for "did you mean" hints on misspelled keys.
FIELD_NAMES = sorted({name for section in _Section.__subclasses__() for name in section.model_fields})
