"""Face-embedding backbones for the ``visual`` stage, registered by name (like timm's models).

Every backbone takes the ``faces`` stage's aligned uint8 crops ``(N, S, S, 3)`` RGB and returns
``(N, dim)`` float32. Adding one: a module with a :class:`Backbone` subclass decorated with
:func:`register_backbone`, and its line in :data:`~avpipe.extractors.backbones.base.BUILTIN_BACKBONES`
(docs/extending.md). Modules are imported when their backbone is first looked up; heavy imports
stay inside ``load``.
"""
from __future__ import annotations

from avpipe.extractors.backbones.base import (BACKBONES, Backbone, BackboneUnavailable, backbone_names,
                                              create_backbone, get_backbone, register_backbone)

__all__ = ["BACKBONES", "Backbone", "BackboneUnavailable", "backbone_names", "create_backbone", "get_backbone",
           "register_backbone"]
