"""Synthetic media and the sample corpus (needs the ``sample`` extra: scikit-image, espeakng-loader).

Nothing here is imported by the pipeline: espeak-ng is GPL-3.0 and stays in fixture tooling.
"""
