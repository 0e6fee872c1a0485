"""Everything a run needs, as plain dataclasses: flags fill them, the library reads them, and the
whole thing is saved as JSON next to the checkpoints so a resumed run can check it is the same job."""

from __future__ import annotations

import dataclasses
import json


@dataclasses.dataclass
class DataConfig:
    records_dir: str = ""  # directory written by tools/make_tfrecords.py (local or gs://)
    tfds_name: str = ""  # instead of records: a TFDS dataset, e.g. "tf_flowers"
    tfds_data_dir: str | None = None  # where TFDS keeps its data; None = its default (~/tensorflow_datasets)
    train_split: str = "train"  # split to train on (a records split, or a TFDS split like "train[:90%]")
    validation_split: str = "validation"  # split to validate on ("" = no validation)
    image_size: int = 0  # 0: the model's default size
    batch_size: int = 32  # global batch, over all replicas and workers
    shuffle_buffer: int = 2048  # examples in the training shuffle buffer
    crop_area_range: tuple[float, float] = (0.08, 1.0)  # Inception-style random crop
    crop_aspect_range: tuple[float, float] = (0.75, 1.333)  # aspect ratio range of the random crop
    eval_crop_fraction: float = 0.875  # centre crop for evaluation and prediction
    cache: bool = False  # cache decoded, resized images in memory (small data sets)
    num_parallel_calls: int = -1  # -1: tf.data.AUTOTUNE
    data_service: str = ""  # grpc://host:port of a tf.data service dispatcher
    data_service_mode: str = "distributed_epoch"  # or parallel_epochs; see tltrain.data
    seed: int | None = None


@dataclasses.dataclass
class AugmentConfig:
    """On-device augmentation; `preset` fills the fields below unless they are set explicitly."""

    preset: str = "flip"  # none | flip | seed_recipe
    horizontal_flip: bool = True  # random left-right flip
    vertical_flip: bool = False  # random up-down flip
    rotation: float = 0.0  # degrees, uniform in [-rotation, rotation]
    shift: float = 0.0  # fraction of height/width
    zoom: float = 0.0  # fraction
    shear: float = 0.0  # shear angle in radians-as-fraction, like ImageDataGenerator's shear_range
    contrast: float = 0.0  # random contrast factor in [1 - contrast, 1 + contrast]
    brightness: float = 0.0  # random brightness shift, fraction of the 0-255 range
    fill_mode: str = "nearest"  # nearest | reflect: what the geometric transforms show outside the image
    mixup_alpha: float = 0.0  # mixup Beta(alpha, alpha); 0 = off
    cutmix_alpha: float = 0.0  # cutmix Beta(alpha, alpha); 0 = off
    seed: int | None = None


@dataclasses.dataclass
class ModelConfig:
    model: str = "mobilenet_v2"  # a key of tltrain.models.REGISTRY, or simple_cnn
    weights: str = "imagenet"  # imagenet | none | PATH (.weights.h5, .keras, .h5)
    alpha: float = 1.0  # width multiplier for the MobileNet families
    feature_layer: str = ""  # cut the backbone at this layer; "" = its last layer
    pooling: str = "avg"  # avg | max | flatten
    head_units: tuple[int, ...] = ()  # ReLU Dense layers between pooling and the classifier, e.g. 1024,256
    dropout: float = 0.2  # dropout before each head Dense layer
    l2: float = 0.0  # L2 weight decay on the head
    min_matched_fraction: float = 0.9  # weights from PATH: error when fewer backbone layers match


@dataclasses.dataclass
class TrainConfig:
    model_dir: str = ""  # where checkpoints, summaries, reports and exports go (local or gs://)
    epochs: int = 5  # phase 1: frozen backbone, new head
    fine_tune_epochs: int = 0  # phase 2: top of the backbone unfrozen
    fine_tune_at: str = ""  # layer index, layer name or block name; "" = the model's default cut
    freeze: str = "backbone"  # backbone | none
    fine_tune_batchnorm: bool = False  # phase 2: also train BatchNorm layers (kept in inference mode otherwise)
    optimizer: str = "adam"  # adam | sgd | rmsprop
    learning_rate: float = 1e-3  # phase 1 peak learning rate
    fine_tune_learning_rate: float = 0.0  # 0: learning_rate / 10
    schedule: str = "cosine"  # cosine | step | constant
    warmup_epochs: float = 0.0  # linear warm-up at the start of each phase
    label_smoothing: float = 0.0  # label smoothing of the cross-entropy
    class_weight: str = "none"  # none | balanced
    steps_per_epoch: int = 0  # 0: from dataset.json
    validation_steps: int = 0  # 0: the whole validation split
    steps_per_execution: int = 1  # train steps per tf.function call (>1 for TPUs)
    checkpoint_steps: int = 0  # 0: only at the end of each epoch
    stop_at_accuracy: float = 0.0  # 0: never stop early
    mixed_precision: str = "auto"  # auto | float16 | bfloat16 | none
    scale_learning_rate: str = "none"  # none | linear (with the number of replicas)
    profile_steps: tuple[int, int] | None = None
    seed: int = 0
    num_classes: int = 0  # 0: from the records; else it must match them (a check against the wrong records)
    log_steps: int = 0  # write training summaries every N steps; 0: once per epoch
    eval_split: str = ""  # --mode=evaluate and the export report: this split; "" = test when the records have one, else validation
    export_dir: str = ""  # --mode=export: where to write; "" = model_dir/export
    export_tflite: tuple[str, ...] = ()  # --mode=export: TFLite variants float32,float16,int8 (a bare flag: float32)
    quantize_samples: int = 300  # --mode=export: training images that calibrate the int8 TFLite
    max_accuracy_drop: float = 1.0  # --mode=export: error when a format's top-1 is more points below model.keras's
    allow_accuracy_drop: bool = False  # --mode=export: write the export anyway, past --max_accuracy_drop
    top_k: int = 5  # --mode=predict: classes printed per image
    cache_features: bool = False  # phase 1: run the frozen backbone once per example, train the head on stored features
    cache_augmented_views: int = 0  # --cache_features: also store K augmented views of each training example
    cache_fine_tune: bool = False  # --cache_features: phase 2 too, on stored activations below --fine_tune_at (no aug.)
    feature_cache_dir: str = ""  # --cache_features: where caches go; "" = model_dir/feature_cache (share it across runs)
    max_seconds: float = 0.0  # stop training after this many seconds (checkpoint saved, a re-run continues); 0: no limit


@dataclasses.dataclass
class StrategyConfig:
    strategy: str = "default"  # default | one_device | mirrored | multi_worker | tpu
    tpu: str = ""  # TPU name, or "local" on a TPU VM
    num_cpu_devices: int = 0  # split the CPU into N logical devices (tests, demos)


@dataclasses.dataclass
class RunConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    strategy: StrategyConfig = dataclasses.field(default_factory=StrategyConfig)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        raw = json.loads(text)
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs = {}
        for name, section_cls in zip(sections, (DataConfig, AugmentConfig, ModelConfig, TrainConfig, StrategyConfig)):
            known = {f.name for f in dataclasses.fields(section_cls)}
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.get(name, {}).items() if k in known}
            kwargs[name] = section_cls(**values)
        return cls(**kwargs)
