"""Run configuration: stdlib dataclasses, one dotted name per knob.

The same dotted name is the CLI override (`-o loss.lambda_scc=100`), the Optuna
parameter and the MLflow param. Resolution order: dataclass defaults < profile
< model preset < user overrides.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field


@dataclass
class ModelConfig:
    name: str = "s3vae"
    width: float = 1.0        # multiplies every conv channel count (paper: 1)
    hidden: int = 256         # LSTM width (paper: 256)
    feat_dim: int = 128       # frame feature (paper: 128)
    d_zf: int = 256           # set from the profile's per-dataset latent table unless overridden
    d_zt: int = 32
    dfp_hidden: int = 256     # φ_a: two FC layers


@dataclass
class LossConfig:
    lambda_scc: float = 1000.0   # λ1
    lambda_dfp: float = 100.0    # λ2
    lambda_mi: float = 1.0       # λ3
    # baseline-sv: weight of the supervised heads. 100 by the val curves: at 1 the heads (~5 nats) are lost
    # beside the reconstruction (~-23,000 nats), sprites' Acc 33.8 at 2,000 steps; at 100 87.6 (sv-sprites)
    lambda_sv: float = 100.0
    alpha_disc: float = 10.0     # FHVAE: weight α of the discriminative term log p(i | z2)
    scc_margin: float = 1.0
    # gaussian (fixed σ) | gaussian-learned | gaussian-optimal | bce (models/losses.py). Learned σ: the seed's
    # decoder emits σ (Eq. 1), and on the val curves it is the best or within noise of it for S3VAE and the
    # baseline (docs/assumptions.md, results/curves/likelihood-*)
    recon: str = "gaussian-learned"
    recon_sigma: float = 1.0     # σ of recon=gaussian
    # σ of recon=gaussian-learned at step 0; 0: the train data's std per channel. 1 by the val curves: the data's
    # std renders the sprites attributes sooner but loses the action side (docs/assumptions.md, "Initial σ")
    recon_sigma_init: float = 1.0
    mi_reduce: str = "sum"       # MWS MI over time steps: sum (Eq. 7) | mean (C-DSVAE)
    # mws (Eq. 8, the seed's) | density-ratio (a classifier of joint vs shuffled pairs; no log M ceiling), see
    # models/losses.py and docs/assumptions.md ("MI")
    mi_estimator: str = "mws"
    # steps over which every KL term's weight (terms named kl_*) rises linearly from 0 to its value; 0: off (the
    # papers'). A loss schedule, the same rule for every model (docs/assumptions.md, "KL warm-up"); the
    # smmnist-recipe run of 2026-12-03 logged it under its first name, train.kl_warmup
    kl_warmup: int = 0
    dfp_topk: int = 1
    # C-DSVAE (models/cdsvae.py): weights of the two InfoNCE terms and their temperature; the public code's
    # values (run_cdsvae.sh: weight_c_aug = weight_m_aug = 10; train_cdsvae.py: tau = 0.5, cosine similarity)
    lambda_nce_f: float = 10.0   # z_f of x vs z_f of its time-shuffled copy (content-preserving view)
    lambda_nce_t: float = 10.0   # z_1:T of x vs z_1:T of its appearance-changed copy (motion-preserving view)
    nce_tau: float = 0.5


@dataclass
class DataConfig:
    name: str = "sprites"
    data_dir: str | None = None
    # the dataset's own settings over the profile's (`-o data.split=core`, `-o data.image_size=64`): any key
    # its builder knows (it rejects the others, naming the valid ones); part of the dataset's fingerprint
    options: dict = field(default_factory=dict)


@dataclass
class TrainConfig:
    epochs: int = 1000
    max_steps: int = 0            # 0: no limit beyond epochs
    batch_size: int = 16
    lr: float = 1e-3
    lr_schedule: str = "constant"  # constant (the papers') | cosine (to 0 over the run, per step; judges)
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 0.0        # 0: off
    precision: str = "auto"       # auto | bf16 | fp32
    compile: bool = False
    device: str = "auto"
    log_every: int = 10
    checkpoint_every: int = 500   # steps; 0: only at the end
    eval_every: int = 0           # steps between val scores (learning curves, `val/...`); 0: off
    split: str = "train"          # tables: train; sweeps: train minus val (see ARCHITECTURE.md)


@dataclass
class RunConfig:
    seed: int = 0
    profile: str = "cpu"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def flat(self) -> dict[str, object]:
        """Dotted name -> value, as logged to MLflow (dataset options as `data.<key>`, as they are given)."""
        out = {}
        for sect, vals in self.to_dict().items():
            if isinstance(vals, dict):
                out.update({f"{sect}.{k}": v for k, v in vals.items() if k != "options"})
                out.update({f"{sect}.{k}": v for k, v in vals.get("options", {}).items()})
            else:
                out[sect] = vals
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        cfg = cls()
        for key, val in _flatten(d).items():
            set_dotted(cfg, key, val, parse=False)
        return cfg


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _coerce(text: str, typ, key: str):
    """Parse an override string to the field's type, with an error naming the key."""
    origin = typing.get_origin(typ)
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if origin is not None and args:  # Optional[X] / X | None
        if text.lower() in ("none", "null", ""):
            return None
        typ = args[0]
    try:
        if typ is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            return int(float(text)) if float(text).is_integer() else int(text)
        return typ(text)
    except ValueError:
        raise ValueError(f"override {key}={text!r}: expected a value of type {getattr(typ, '__name__', typ)}") from None


def set_dotted(cfg, key: str, value, parse: bool = True):
    """Set `section.field` on a RunConfig; unknown keys fail listing the valid ones."""
    parts = key.split(".")
    if parts[0] == "data" and (len(parts) == 2 and parts[1] not in ("name", "data_dir", "options")
                               or len(parts) == 3 and parts[1] == "options"):
        # a dataset setting: checked by the dataset's builder when the data is loaded (it knows its keys)
        cfg.data.options[parts[-1]] = _option_value(value) if parse and isinstance(value, str) else value
        return
    obj = cfg
    for p in parts[:-1]:
        if not dataclasses.is_dataclass(obj) or not hasattr(obj, p):
            raise KeyError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(RunConfig().flat()))}")
        obj = getattr(obj, p)
    name = parts[-1]
    fields = {f.name: f for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
    if name not in fields or dataclasses.is_dataclass(getattr(obj, name)):
        raise KeyError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(RunConfig().flat()))}")
    hints = typing.get_type_hints(type(obj))
    if parse and isinstance(value, str):
        value = _coerce(value, hints[name], key)
    setattr(obj, name, value)


def _option_value(text: str):
    """A dataset option from the command line: int, float, true/false, else the string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_overrides(items: list[str] | None, flag: str = "override",
                    form: str = "key=value, e.g. loss.lambda_scc=100") -> dict[str, str]:
    """KEY=VALUE items as {KEY: VALUE} (strings: set_dotted parses them); `flag` and `form` name the option
    and what it expects in the error."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} {item!r}: expected {form}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def resolve_config(model: str, dataset: str, profile: str = "cpu", seed: int = 0,
                   overrides: dict | None = None) -> RunConfig:
    """defaults < profile < model preset < user overrides."""
    from benchmark.profiles import get_profile
    from benchmark.zoo import MODELS
    prof = get_profile(profile)
    entry = MODELS.get(model)
    cfg = RunConfig(seed=seed, profile=prof.name)
    cfg.model.name, cfg.data.name = model, dataset
    prof.data_for(dataset)  # clear error for a dataset the profile lacks
    for k, v in prof.train_for(dataset, model).items():
        set_dotted(cfg, f"train.{k}", v, parse=False)
    for k, v in prof.model_for(dataset).items():
        set_dotted(cfg, f"model.{k}", v, parse=False)
    for k, v in prof.loss_for(dataset, model).items():
        set_dotted(cfg, f"loss.{k}", v, parse=False)
    cfg.model.d_zf, cfg.model.d_zt = prof.latent[dataset]
    for k, v in entry.defaults.items():
        set_dotted(cfg, k, v, parse=False)
    for k, v in (overrides or {}).items():
        set_dotted(cfg, k, v)
    return cfg
