from .deepSVDD_trainer import DeepSVDDTrainer
from .ae_trainer import AETrainer
