"""The pipeline tests' toy stages and clips, for the tests of avpipe.scale."""
from tests.pipeline.conftest import clip_bank, toy_stages, videos  # noqa: F401
