from .base_dataset import *
from .torchvision_dataset import *
from .base_net import *
from .base_trainer import *
