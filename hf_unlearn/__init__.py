"""hf_unlearn: make a CLIP model forget one image subgroup (forget -> remind -> restore)."""
from .config import UnlearnArguments
from .spec import SpecError, SubgroupSpec

__version__ = "0.1.0"


def unlearn(args: UnlearnArguments | None = None, **kwargs) -> dict:
    """Notebook entry point mirroring the recipe: ``unlearn(forget="label=dog,domain=sketch", dataset=..., ...)``."""
    from .pipeline import unlearn as _unlearn

    return _unlearn(args or UnlearnArguments(**kwargs))


__all__ = ["UnlearnArguments", "SubgroupSpec", "SpecError", "unlearn", "__version__"]
