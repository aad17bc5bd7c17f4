"""hf_unlearn: make a CLIP model forget one image subgroup (forget -> remind -> restore)."""
from .config import UnlearnArguments
from .spec import SpecError, SubgroupSpec

__version__ = "0.1.0"


def unlearn(args: UnlearnArguments | None = None, **kwargs) -> dict:
    """Notebook entry point mirroring the recipe: ``unlearn(forget="label=dog,domain=sketch", dataset=..., ...)``;
    ``kwargs`` override the settings of ``args`` (which is not modified)."""
    import dataclasses

    from .pipeline import unlearn as _unlearn

    if args is None:
        return _unlearn(UnlearnArguments.from_dict(kwargs))
    return _unlearn(UnlearnArguments.from_dict({**dataclasses.asdict(args), **kwargs}))


__all__ = ["UnlearnArguments", "SubgroupSpec", "SpecError", "unlearn", "__version__"]
