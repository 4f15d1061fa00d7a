"""Built-in stages, one module each. Importing this package registers them.

The stage graph (docs/stages.md#stage-graph)::

    probe ──┬── faces ──┬── visual
            │           └── visual_clip
            └── audio ──┬── logmel
                        ├── egemaps
                        ├── vggish
                        ├── speech
                        └── asr ──┬── text
                                  └── speech_segments (+ audio)

Each module declares its own ``requires``; the table of built-in stages
(:data:`avpipe.pipeline.stage.BUILTIN_STAGES`, one line per stage) says which modules make up the
built-in graph, and the stage registry imports a module when its stage is first looked up.
Importing this package imports none of them. Modules import their heavy or optional dependencies
(torch, dlib, whisper, transformers) lazily, so importing them is cheap and never fails for a
missing extra. How to add one: docs/extending.md.
"""
