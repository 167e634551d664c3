"""Where model directories saved by face0 0.1 find the projector: their model_index.json names face0cli.projector.

The class lives in face0cli.model.projector; this module re-exports it so those directories keep loading. diffusers
checks a component's class against the loading base classes it finds in the named module, so ModelMixin is here too.
"""

from diffusers.models.modeling_utils import ModelMixin

from face0cli.model.projector import FaceProjector, projector_param_count

__all__ = ["FaceProjector", "ModelMixin", "projector_param_count"]
