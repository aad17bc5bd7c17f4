from .base import UnlearnConfig, UnlearnTrainer
from .forget import ForgetConfig, ForgetTrainer
from .remind import RemindConfig, RemindTrainer, ema_update

__all__ = ["UnlearnConfig", "UnlearnTrainer", "ForgetConfig", "ForgetTrainer", "RemindConfig", "RemindTrainer", "ema_update"]
