"""Face-embedding backbones for the ``visual`` stage, registered by name (like timm's models).

Every backbone takes the ``faces`` stage's aligned uint8 crops ``(N, S, S, 3)`` RGB and returns
``(N, dim)`` float32. Adding one: subclass :class:`Backbone`, decorate with
:func:`register_backbone`, import the module below. Heavy imports stay inside ``load``.
"""
from __future__ import annotations

from avpipe.extractors.backbones.base import (Backbone, BackboneUnavailable, backbone_names,
                                              create_backbone, get_backbone, register_backbone)

# Built-in backbones register themselves on import (cheap: no heavy imports at module level).
from avpipe.extractors.backbones import (dlib_resnet, dlib_torch, face_models, facenet,  # noqa: E402,F401
                                          fer_xception, hog)

__all__ = ["Backbone", "BackboneUnavailable", "backbone_names", "create_backbone", "get_backbone",
           "register_backbone"]
