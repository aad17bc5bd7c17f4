from .base import UnlearnConfig, UnlearnTrainer
from .baselines import (
    CLIPEraseConfig, CLIPEraseTrainer, FTConfig, FTTrainer, GAConfig, GATrainer, NegGradPlusConfig, NegGradPlusTrainer,
    RLConfig, RLTrainer, SalUnConfig, SalUnTrainer, SCRUBConfig, SCRUBTrainer, saliency_mask,
)
from .forget import ForgetConfig, ForgetTrainer
from .remind import RemindConfig, RemindTrainer, ema_update

__all__ = [
    "UnlearnConfig", "UnlearnTrainer", "ForgetConfig", "ForgetTrainer", "RemindConfig", "RemindTrainer", "ema_update",
    "GAConfig", "GATrainer", "NegGradPlusConfig", "NegGradPlusTrainer", "FTConfig", "FTTrainer", "RLConfig", "RLTrainer",
    "SCRUBConfig", "SCRUBTrainer", "SalUnConfig", "SalUnTrainer", "saliency_mask", "CLIPEraseConfig", "CLIPEraseTrainer",
]
