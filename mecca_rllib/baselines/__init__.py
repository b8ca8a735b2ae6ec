"""Baselines of the benchmark (MECCA.md §7, Table 1) and the one interface every method
is evaluated through (:class:`Segmenter`)."""
from mecca_rllib.baselines.interaction import ClickSchedule, Interaction, with_schedule
from mecca_rllib.baselines.segmenter import ModuleSegmenter, Segmenter, StepOutput
from mecca_rllib.baselines.supervised import (
    KINDS,
    PNet,
    SupervisedSegmenter,
    SupervisedSettings,
    TrainResult,
    segmentation_loss,
    train_supervised,
)

__all__ = [
    "KINDS",
    "ClickSchedule",
    "Interaction",
    "ModuleSegmenter",
    "PNet",
    "Segmenter",
    "StepOutput",
    "SupervisedSegmenter",
    "SupervisedSettings",
    "TrainResult",
    "segmentation_loss",
    "train_supervised",
    "with_schedule",
]
