"""Everything a run needs, as plain dataclasses: flags fill them, the library reads them, and the
whole thing is saved as JSON next to the checkpoints so a resumed run can check it is the same job.

Each field is declared once, with everything about it (tltrain.fields): its type (a `Literal` for a closed set
of values), its default, its help text and its range. `tltrain.main` makes the flags from them and `validate()`
checks a config against them, so the command line and the Python API (`tltrain.api`) accept exactly the same
values and refuse the others with the same one-line message.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from typing import Literal

from tltrain.fields import Section, flag_name, setting

Preset = Literal["none", "flip", "seed_recipe"]
FillMode = Literal["nearest", "reflect"]
DataServiceMode = Literal["distributed_epoch", "parallel_epochs"]
Pooling = Literal["avg", "max", "flatten"]
Freeze = Literal["backbone", "none"]
Optimizer = Literal["adam", "sgd", "rmsprop"]
Schedule = Literal["cosine", "step", "constant"]
ClassWeight = Literal["none", "balanced"]
MixedPrecision = Literal["auto", "float16", "bfloat16", "none"]
ScaleLearningRate = Literal["none", "linear"]
Strategy = Literal["default", "one_device", "mirrored", "multi_worker", "tpu"]
Plan = Literal["auto", "none"]
TestTimeAugmentation = Literal["none", "flip"]


@dataclasses.dataclass
class DataConfig(Section):
    records_dir: str = setting("", "directory written by tools/make_tfrecords.py (local or gs://)")
    tfds_name: str = setting("", 'instead of records: a TFDS dataset, e.g. "tf_flowers"')
    tfds_data_dir: str | None = setting(None, "where TFDS keeps its data; None = its default (~/tensorflow_datasets)")
    train_split: str = setting("train", 'split to train on (a records split, or a TFDS split like "train[:90%]")')
    validation_split: str = setting("validation", 'split to validate on ("" = no validation)')
    image_size: int = setting(0, "0: the model's default size", ge=0)
    batch_size: int = setting(32, "global batch, over all replicas and workers", ge=1)
    shuffle_buffer: int = setting(2048, "examples in the training shuffle buffer", ge=1)
    crop_area_range: tuple[float, float] = setting((0.08, 1.0), "Inception-style random crop: min,max fraction of "
                                                   "the image area", gt=0, le=1, order="<=")
    crop_aspect_range: tuple[float, float] = setting((0.75, 1.333), "aspect ratio range of the random crop",
                                                     gt=0, order="<=")
    eval_crop_fraction: float = setting(0.875, "centre crop for evaluation and prediction", gt=0, le=1)
    cache: bool = setting(False, "cache decoded, resized images in memory (small data sets)")
    num_parallel_calls: int = setting(-1, "-1: tf.data.AUTOTUNE", ge=-1)
    data_service: str = setting("", "grpc://host:port of a tf.data service dispatcher")
    data_service_mode: DataServiceMode = setting("distributed_epoch", "distributed_epoch: each example once per "
                                                 "epoch over the service's workers; parallel_epochs: each worker "
                                                 "produces whole epochs")
    data_service_timeout: float = setting(60.0, "seconds a tf.data service call may wait before the run stops "
                                          "with an error naming the address", gt=0)
    seed: int | None = setting(None, "set from --seed", ge=0)


@dataclasses.dataclass
class AugmentConfig(Section):
    """On-device augmentation; `preset` fills the fields below unless they are set explicitly."""

    preset: Preset = setting("flip", "augmentation preset; the flags below override it", flag="augment")
    horizontal_flip: bool = setting(True, "random left-right flip")
    vertical_flip: bool = setting(False, "random up-down flip")
    rotation: float = setting(0.0, "degrees, uniform in [-rotation, rotation]", ge=0, lt=180)
    shift: float = setting(0.0, "fraction of height/width", ge=0, lt=1)
    zoom: float = setting(0.0, "fraction", ge=0, lt=1)
    shear: float = setting(0.0, "shear angle in radians-as-fraction, like ImageDataGenerator's shear_range",
                           ge=0, lt=math.pi / 2)
    contrast: float = setting(0.0, "random contrast factor in [1 - contrast, 1 + contrast]", ge=0, lt=1)
    brightness: float = setting(0.0, "random brightness shift, fraction of the 0-255 range", ge=0, lt=1)
    fill_mode: FillMode = setting("nearest", "what the geometric transforms show outside the image")
    mixup_alpha: float = setting(0.0, "mixup Beta(alpha, alpha); 0 = off", ge=0)
    cutmix_alpha: float = setting(0.0, "cutmix Beta(alpha, alpha); 0 = off", ge=0)
    seed: int | None = setting(None, "set from --seed", ge=0)


@dataclasses.dataclass
class ModelConfig(Section):
    model: str = setting("mobilenet_v2", "a key of tltrain.models.REGISTRY, or simple_cnn (list: print them all)")
    weights: str = setting("imagenet", "imagenet | none | PATH (.weights.h5, .keras, .h5)")
    alpha: float = setting(1.0, "width multiplier for the MobileNet families", gt=0)
    feature_layer: str = setting("", 'cut the backbone at this layer; "" = its last layer')
    pooling: Pooling = setting("avg", "how the backbone's feature map becomes a vector")
    head_units: tuple[int, ...] = setting((), "ReLU Dense layers between pooling and the classifier, e.g. 1024,256",
                                          ge=1)
    dropout: float = setting(0.2, "dropout before each head Dense layer", ge=0, lt=1)
    l2: float = setting(0.0, "L2 weight decay on the head", ge=0)
    min_matched_fraction: float = setting(0.9, "weights from PATH: error when fewer backbone layers match",
                                          gt=0, le=1)


@dataclasses.dataclass
class TrainConfig(Section):
    model_dir: str = setting("", "where checkpoints, summaries, reports and exports go (local or gs://)")
    plan: Plan = setting("auto", "auto: the settings not given are derived from the data (tltrain/plan.py); none: the "
                                 "fixed defaults")
    epochs: int = setting(5, "phase 1: frozen backbone, new head", ge=0)
    fine_tune_epochs: int = setting(0, "phase 2: top of the backbone unfrozen", ge=0)
    fine_tune_at: str = setting("", 'layer index, layer name, block name, or a fraction of the blocks (0.33: the top '
                                "third); \"\" = the model's default cut")
    freeze: Freeze = setting("backbone", "backbone: two phases; none: everything trains from the start")
    fine_tune_batchnorm: bool = setting(False, "phase 2: also train BatchNorm layers (kept in inference mode "
                                               "otherwise)")
    optimizer: Optimizer = setting("adam", "sgd has momentum 0.9")
    learning_rate: float = setting(1e-3, "phase 1 peak learning rate", gt=0)
    fine_tune_learning_rate: float = setting(0.0, "0: learning_rate / 10", ge=0)
    schedule: Schedule = setting("cosine", "learning rate over each phase, after the warm-up")
    warmup_epochs: float = setting(0.0, "linear warm-up at the start of each phase", ge=0)
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy", ge=0, lt=1)
    class_weight: ClassWeight = setting("none", "balanced: weight each class by total / (classes * count)")
    steps_per_epoch: int = setting(0, "0: from dataset.json", ge=0)
    validation_steps: int = setting(0, "0: the whole validation split", ge=0)
    steps_per_execution: int = setting(1, "train steps per tf.function call (>1 for TPUs)", ge=1)
    checkpoint_steps: int = setting(0, "0: only at the end of each epoch", ge=0)
    stop_at_accuracy: float = setting(0.0, "0: never stop early", ge=0, le=1)
    patience: int = setting(0, "end fine-tuning after this many validations that do not beat its own best "
                               "accuracy; 0: never", ge=0)
    ema_decay: float = setting(0.0, "keep an exponential moving average of the weights (e.g. 0.999), which is what "
                                    "is validated and kept; 0: off", ge=0, lt=1)
    mixed_precision: MixedPrecision = setting("auto", "auto: float16 on GPUs of capability 7.0+, bfloat16 on TPUs, "
                                                      "float32 elsewhere, CPUs included (bfloat16 there only when "
                                                      "asked: slower on the CPUs measured)")
    scale_learning_rate: ScaleLearningRate = setting("none", "linear: multiply the learning rates by the replicas")
    profile_steps: tuple[int, int] | None = setting(None, "A,B: a profiler trace of global steps [A, B) in "
                                                          "model_dir/train", ge=0, order="<")
    seed: int = setting(0, "seeds the run: weight initialisation, data shuffling and augmentation", ge=0)
    num_classes: int = setting(0, "0: from the records; else it must match them (a check against the wrong "
                                  "records)", ge=0)
    log_steps: int = setting(0, "write training summaries every N steps; 0: once per epoch", ge=0)
    progress_seconds: float = setting(30.0, "progress in an epoch: a bar on a terminal, else a line every N "
                                            "seconds; 0: none", ge=0)
    cache_features: bool = setting(False, "phase 1: run the frozen backbone once per example, train the head on "
                                          "stored features")
    cache_augmented_views: int = setting(0, "--cache_features: also store K augmented views of each training "
                                            "example", ge=0)
    cache_fine_tune: bool = setting(False, "--cache_features: phase 2 too, on stored activations below "
                                           "--fine_tune_at (no augmentation)")
    feature_cache_dir: str = setting("", '--cache_features: where caches go; "" = model_dir/feature_cache (share '
                                         "it across runs)")
    max_seconds: float = setting(0.0, "stop training after this many seconds (checkpoint saved, a re-run "
                                      "continues); 0: no limit", ge=0)


@dataclasses.dataclass
class EvaluateConfig(Section):
    eval_split: str = setting("", '--mode=evaluate and the export report: this split; "" = test when the records '
                                  "have one, else validation")
    tta: TestTimeAugmentation = setting("none", "flip: --mode=evaluate and --mode=export average each image's and "
                                                "its mirror's predictions")


@dataclasses.dataclass
class ExportConfig(Section):
    export_dir: str = setting("", '--mode=export: where to write; "" = model_dir/export')
    export_tflite: tuple[str, ...] = setting((), "--mode=export: TFLite variants float32,float16,int8 (a bare "
                                                "flag: float32)")
    quantize_samples: int = setting(300, "--mode=export: training images that calibrate the int8 TFLite", ge=1)
    max_accuracy_drop: float = setting(1.0, "--mode=export: error when a format's top-1 is more points below "
                                            "model.keras's", ge=0)
    allow_accuracy_drop: bool = setting(False, "--mode=export: write the export anyway, past --max_accuracy_drop")


@dataclasses.dataclass
class PredictConfig(Section):
    top_k: int = setting(5, "--mode=predict: classes printed per image", ge=1)


@dataclasses.dataclass
class StrategyConfig(Section):
    strategy: Strategy = setting("default", "the tf.distribute strategy")
    tpu: str = setting("", 'TPU name, or "local" on a TPU VM')
    num_cpu_devices: int = setting(0, "split the CPU into N logical devices (tests, demos)", ge=0)


@dataclasses.dataclass
class RunConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    strategy: StrategyConfig = dataclasses.field(default_factory=StrategyConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    predict: PredictConfig = dataclasses.field(default_factory=PredictConfig)

    def validate(self) -> RunConfig:
        """Every section's fields against their declarations (see Section.validate); returns self."""
        for section in dataclasses.fields(self):
            getattr(self, section.name).validate()
        return self

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """The config a model_dir's config.json holds. Unknown keys are ignored, and a field that has moved to
        another section since the file was written (eval_split, export_*, top_k were under train) is found
        in its old place; an export_tflite of true or false (before the TFLite variants) reads as float32 or
        none."""
        raw = json.loads(text)
        hints = typing.get_type_hints(cls)
        found = {key: value for section in raw.values() if isinstance(section, dict) for key, value in section.items()}
        kwargs = {}
        for section in dataclasses.fields(cls):
            section_cls = hints[section.name]
            own = raw.get(section.name, {})
            values = {}
            for field in dataclasses.fields(section_cls):
                if field.name in own or (field.name != "seed" and field.name in found):
                    value = own.get(field.name, found.get(field.name))
                    values[field.name] = tuple(value) if isinstance(value, list) else value
            if isinstance(values.get("export_tflite"), bool):  # a bool (write model.tflite) before the variants
                values["export_tflite"] = ("float32",) if values["export_tflite"] else ()
            kwargs[section.name] = section_cls(**values)
        return cls(**kwargs)



class Setting(typing.NamedTuple):
    section: str  # a RunConfig field
    field: dataclasses.Field
    hint: typing.Any  # the field's type


def settings() -> dict[str, Setting]:
    """Every config field by flag name. Every section has a `seed`: one setting, declared by TrainConfig's
    (an int, 0 by default)."""
    found: dict[str, Setting] = {}
    for section in dataclasses.fields(RunConfig):
        hints = typing.get_type_hints(section.default_factory)
        for field in dataclasses.fields(section.default_factory):
            if flag_name(field) not in found or section.name == "train":
                found[flag_name(field)] = Setting(section.name, field, hints[field.name])
    return found


def from_settings(**values) -> RunConfig:
    """A validated RunConfig from settings named like the flags (`augment` is the preset; `seed`, 0 unless
    given, seeds every section, as on the command line). TypeError for a name that is no setting."""
    known = settings()
    unknown = sorted(set(values) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=3)
        raise TypeError(f"unknown setting {unknown[0]!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    values.setdefault("seed", TrainConfig.seed)
    sections = {section.name: section.default_factory for section in dataclasses.fields(RunConfig)}
    return RunConfig(**{
        name: cls(**{f.name: values[flag_name(f)] for f in dataclasses.fields(cls) if flag_name(f) in values})
        for name, cls in sections.items()
    }).validate()
