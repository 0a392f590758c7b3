"""The main job on the bundled sample: load it as pandas would, train the
study's 3x3 model (stride-2 pooling), evaluate on the PublicTest rows, save,
reload in place and predict inside a pandas pipeline."""

import os
import tempfile

import fer

EPOCHS = int(os.environ.get("FER_DEMO_EPOCHS", "3"))

df = fer.load_sample()
print(f"fer {fer.__version__}: bundled FER2013 sample, {len(df)} rows")
counts = df.groupby(["Usage", "emotion"]).size().unstack(fill_value=0)
counts.columns = [fer.EMOTIONS[c] for c in counts.columns]
print(counts.to_string(), "\n")

model = fer.train(df, "seed3x3", pooling="stride2", epochs=EPOCHS, seed=0)
print(model.history.round(4).to_string(index=False), "\n")

report = model.evaluate(df)  # the PublicTest rows
print("PublicTest rows of the sample:")
print(report, "\n")

with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "seed3x3.fer")
    model.save(path)
    reloaded = fer.load(path)
    print(f"saved {os.path.getsize(path):,} bytes to {path} and reloaded it")

test = df[df.Usage == "PublicTest"].head(8)
out = test.assign(
    predicted=[fer.EMOTIONS[i] for i in fer.predict(test, model=reloaded)],
    actual=[fer.EMOTIONS[i] for i in test.emotion],
)[["actual", "predicted"]]
print(out.to_string())
