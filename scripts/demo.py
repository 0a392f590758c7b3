"""The main job on the bundled sample: load it as pandas would, parse the
pixels and print the class counts per split."""

import fer

df = fer.load_sample()
parts = fer.split(df, validation=0.1, seed=0)
x = fer.parse_pixels(parts.train.pixels)
print(f"fer {fer.__version__}: bundled sample, {len(df)} rows")
print(f"train {x.shape} {x.dtype}, validation {len(parts.validation)}, test {len(parts.test)}")
counts = df.groupby(["Usage", "emotion"]).size().unstack(fill_value=0)
counts.columns = [fer.EMOTIONS[c] for c in counts.columns]
print(counts.to_string())
