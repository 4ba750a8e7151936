from .main import load_dataset
from .mnist import MNIST_Dataset
from .cifar10 import CIFAR10_Dataset
