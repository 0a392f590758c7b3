import json
import math
import pickle
import struct
import subprocess
import sys
import threading
import _thread
import time

import numpy as np
import pandas as pd
import pytest

import fer
from fer.errors import FerValueError, ModelFileError

# A small network so the suite stays fast on 2 cores.
TINY = {
    "name": "tiny",
    "input_shape": [1, 48, 48],
    "layers": [
        {"type": "conv2d", "filters": 8, "kernel": 3, "stride": 2, "padding": "same", "activation": "relu"},
        {"type": "max_pool2d", "kernel": 2, "stride": 2},
        {"type": "conv2d", "filters": 16, "kernel": 3, "padding": "same", "activation": "relu"},
        {"type": "max_pool2d", "kernel": 2, "stride": 2},
        {"type": "dropout", "rate": 0.1},
        {"type": "flatten"},
        {"type": "dense", "units": 7, "activation": "softmax"},
    ],
}


@pytest.fixture(scope="module")
def trained(sample):
    return fer.Model(TINY, seed=3).fit(sample, epochs=2, progress=False)


def test_models_lists_presets():
    presets = fer.models()
    assert {"seed3x3", "seed4x4"} <= set(presets)
    assert all(isinstance(d, str) and d for d in presets.values())


@pytest.mark.parametrize(
    "preset, pooling, total, convs, flat",
    [
        ("seed3x3", "same", 2_295_839, [480, 20784, 27712, 36928, 71548, 138508], 285_696),
        ("seed4x4", "same", 2_438_375, [816, 36912, 49216, 65600, 73856, 147584], 294_912),
        ("seed3x3", "stride2", 295_960 + 4464 * 7 + 7, [480, 20784, 27712, 36928, 71548, 138508], 4464),
    ],
)
def test_study_models_match_the_paper(preset, pooling, total, convs, flat):
    model = fer.Model(preset, pooling=pooling)
    rows = model._native.summary()
    assert [r[3] for r in rows if r[1] == "Conv2D"] == convs
    assert model.count_params() == total
    text = str(model)
    assert f"Total params: {total:,}" in text and "Conv2D" in text and "Dense" in text
    assert [r[2] for r in rows if r[1] == "Flatten"] == [[flat]]
    assert f"(None, {flat})" in text


def test_unknown_model_and_options_are_clear():
    with pytest.raises(FerValueError, match="unknown model preset"):
        fer.Model("resnet9000")
    with pytest.raises(FerValueError, match="pooling"):
        fer.Model("seed3x3", pooling="avg")
    with pytest.raises(FerValueError, match="no option"):
        fer.Model("seed3x3", colour=True)


def test_training_learns_and_records_history(trained, sample):
    h = trained.history
    assert list(h.columns) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]
    assert list(h.epoch) == [1.0, 2.0]
    assert np.isfinite(h[["loss", "accuracy", "val_loss", "val_accuracy"]].to_numpy()).all()
    assert (h.seconds > 0).all()
    assert h.loss.iloc[1] < h.loss.iloc[0]
    report = trained.evaluate(sample)
    assert 0 <= report.accuracy <= 1 and np.isfinite(report.loss)
    assert report.confusion_matrix.values.sum() == (sample.Usage == "PublicTest").sum()


def test_overfits_a_small_batch():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(32, 48, 48), dtype=np.uint8)
    y = rng.integers(0, 7, size=32)
    model = fer.Model(TINY, seed=0).fit(x, y, epochs=120, batch_size=32, validation=0, progress=False, learning_rate=3e-3)
    assert (model.predict(x) == y).mean() == 1.0


def test_predict_accepts_every_documented_input(trained, sample):
    head = sample.head(5)
    x8 = fer.parse_pixels(head.pixels)
    expected = trained.predict_proba(x8)
    assert expected.shape == (5, 7) and expected.dtype == np.float32
    np.testing.assert_allclose(expected.sum(axis=1), 1, rtol=1e-5)
    variants = [
        x8[..., None],
        x8.reshape(5, 2304),
        x8.astype(np.float64) / 255,
        x8.astype(np.float32) / 255,
        x8.astype(np.int64),
        list(head.pixels),
        head.pixels.to_numpy(dtype=object),
    ]
    for v in variants:
        np.testing.assert_allclose(trained.predict_proba(v), expected, rtol=1e-5, atol=1e-6)
    one = trained.predict_proba(x8[0])
    np.testing.assert_allclose(one, expected[:1], rtol=1e-5, atol=1e-6)
    frame = trained.predict_proba(head)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(fer.EMOTIONS)
    assert list(frame.index) == list(head.index)
    series = trained.predict_proba(head.pixels)
    assert list(series.index) == list(head.index)
    labels = trained.predict(head)
    np.testing.assert_array_equal(labels, expected.argmax(axis=1))
    assert fer.predict(head, model=trained).tolist() == labels.tolist()
    out = head.assign(pred=fer.predict(head, model=trained))
    assert out.pred.between(0, 6).all()


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (np.zeros((2, 47, 48), np.uint8), FerValueError, r"shape \(2, 47, 48\)"),
        (np.zeros((0, 48, 48), np.uint8), FerValueError, "empty"),
        (np.full((1, 48, 48), np.nan), FerValueError, "NaN"),
        (np.full((1, 48, 48), 2.0), FerValueError, r"\[0, 1\]"),
        (np.full((1, 48, 48), 300), FerValueError, "outside 0-255"),
        (np.zeros((1, 48, 48), np.complex64), TypeError, "complex"),
        (np.array([{"a": 1}], dtype=object), TypeError, "object"),
        (pd.DataFrame({"x": [1]}), FerValueError, "no 'pixels' column"),
    ],
)
def test_bad_inputs_raise_clear_errors(trained, bad, error, match):
    with pytest.raises(error, match=match):
        trained.predict(bad)


def test_bad_training_arguments(sample):
    model = fer.Model(TINY)
    for kwargs, match in [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": -1}, "batch_size"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"optimizer": "rmsprop"}, "unknown optimizer"),
        ({"validation": 1.0}, "validation"),
    ]:
        with pytest.raises(FerValueError, match=match):
            model.fit(sample, progress=False, **kwargs)
    bad = sample.head(20).copy()
    bad.loc[bad.index[3], "emotion"] = 7
    with pytest.raises(FerValueError, match="outside 0-6"):
        model.fit(bad, progress=False)
    with pytest.raises(FerValueError, match="no Training rows"):
        model.fit(sample[sample.Usage == "PublicTest"], progress=False)
    one_each = sample[sample.Usage == "Training"].groupby("emotion").head(1)
    with pytest.raises(FerValueError, match="validation=0.9 holds out all 7 Training rows"):
        model.fit(one_each, validation=0.9, progress=False)
    x, y = fer.parse_pixels(sample.pixels.head(4)), sample.emotion.head(4).to_numpy()
    with pytest.raises(TypeError, match=r"fer.train\(\(x, y\)\)"):
        fer.train(x, y)


def test_same_seed_same_weights(sample):
    train = sample[sample.Usage == "Training"].head(128)
    a = fer.Model(TINY, seed=5).fit(train, epochs=1, progress=False)
    b = fer.Model(TINY, seed=5).fit(train, epochs=1, progress=False)
    c = fer.Model(TINY, seed=6).fit(train, epochs=1, progress=False)
    assert a.get_weights() == b.get_weights()
    assert a.get_weights() != c.get_weights()


def test_save_load_predicts_identically_in_a_fresh_process(trained, sample, tmp_path):
    path = tmp_path / "model.fer"
    trained.save(path)
    loaded = fer.load(path)
    x = fer.parse_pixels(sample.pixels.head(50))
    np.testing.assert_array_equal(loaded.predict_proba(x), trained.predict_proba(x))
    pd.testing.assert_frame_equal(loaded.history, trained.history)
    np.save(tmp_path / "x.npy", x)
    code = (
        "import numpy as np, fer, sys; m = fer.load(sys.argv[1]); "
        "np.save(sys.argv[3], m.predict_proba(np.load(sys.argv[2]))); m.save(sys.argv[4])"
    )
    again = tmp_path / "again.fer"
    subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "x.npy"), str(tmp_path / "p.npy"), str(again)], check=True
    )
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), trained.predict_proba(x))
    # Same model, same bytes: saved again here and in the other process.
    for i in range(5):
        trained.save(tmp_path / f"{i}.fer")
        assert (tmp_path / f"{i}.fer").read_bytes() == path.read_bytes()
    assert again.read_bytes() == path.read_bytes()


def test_models_pickle(trained, sample):
    clone = pickle.loads(pickle.dumps(trained))
    x = fer.parse_pixels(sample.pixels.head(10))
    np.testing.assert_array_equal(clone.predict_proba(x), trained.predict_proba(x))


@pytest.mark.parametrize(
    "payload",
    [b"", b"garbage" * 10, b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}", pickle.dumps({"a": 1})],
)
def test_corrupt_files_are_model_file_errors(tmp_path, payload):
    path = tmp_path / "bad.fer"
    path.write_bytes(payload)
    with pytest.raises(ModelFileError):
        fer.load(path)


def test_truncated_file_is_a_model_file_error(trained, tmp_path):
    data = trained.to_bytes()
    for cut in (10, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.fer"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFileError):
            fer.load(path)


def test_plain_safetensors_without_fer_header_is_rejected(trained, tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(trained.get_weights())
    with pytest.raises(ModelFileError, match="not a fer model"):
        fer.load(path)


def test_non_finite_weights_in_a_file_are_a_model_file_error(trained):
    raw = bytearray(trained.to_bytes())
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    name = sorted(k for k in header if k != "__metadata__")[0]
    at = 8 + size + header[name]["data_offsets"][0] + 4
    raw[at : at + 4] = struct.pack("<f", float("nan"))
    with pytest.raises(ModelFileError, match=f'tensor "{name}" holds a non-finite value \\(NaN\\) at element 1'):
        fer.Model.from_bytes(bytes(raw))


def test_callbacks_can_stop_training(sample):
    seen = []

    def stop_after_two(epoch, logs):
        seen.append((epoch, sorted(logs)))
        return epoch >= 2

    model = fer.Model(TINY).fit(sample, epochs=10, callbacks=[stop_after_two], progress=False)
    assert len(model.history) == 2 and seen[0][0] == 1
    assert "val_accuracy" in seen[0][1]


def test_a_raising_callback_ends_the_fit_cleanly(sample):
    def boom(epoch, logs):
        raise RuntimeError("callback failed")

    model = fer.Model(TINY)
    with pytest.raises(RuntimeError, match="callback failed"):
        model.fit(sample, epochs=3, callbacks=[boom], progress=False)
    # The native trainer was released: no fit is in progress any more.
    with pytest.raises(FerValueError, match="not fitting"):
        model._native.train_batch()
    assert len(model.history) == 1  # the epoch ran; its callback failed
    model.fit(sample, epochs=1, progress=False)
    assert len(model.predict(sample)) == len(sample)


def test_early_stopping_restores_best(sample):
    stopper = fer.callbacks.EarlyStopping(monitor="val_loss", patience=0)
    model = fer.Model(TINY)
    weights = {}

    def snapshot(epoch, logs):
        weights[epoch] = model.get_weights()

    model.fit(sample, epochs=6, learning_rate=0.05, callbacks=[snapshot, stopper], progress=False)
    assert stopper.best_epoch is not None and len(model.history) <= 6
    best = model.history.val_loss.min()
    assert stopper.best == pytest.approx(best)
    assert model.get_weights() == weights[stopper.best_epoch]
    if stopper.best_epoch != len(model.history):
        assert model.get_weights() != weights[len(model.history)]


def test_monitoring_what_the_fit_does_not_report_is_an_error(sample):
    train = sample[sample.Usage == "Training"].head(128)
    # Without validation rows val_* is NaN: no "improvement" could ever be seen.
    for cb in (fer.callbacks.EarlyStopping(), fer.callbacks.ReduceLROnPlateau()):
        with pytest.raises(FerValueError, match="no validation rows"):
            fer.Model(TINY).fit(train, epochs=3, validation=0, callbacks=[cb], progress=False)
    with pytest.raises(FerValueError, match="'val_acc', which training does not report"):
        fer.Model(TINY).fit(train, epochs=2, callbacks=[fer.callbacks.ReduceLROnPlateau(monitor="val_acc")], progress=False)
    # The check is per fit: a callback reused for a fit without validation rows says so too.
    plateau = fer.callbacks.ReduceLROnPlateau()
    model = fer.Model(TINY).fit(train, epochs=2, validation=0.25, callbacks=[plateau], progress=False)
    with pytest.raises(FerValueError, match="no validation rows"):
        model.fit(train, epochs=2, validation=0, callbacks=[plateau], progress=False)
    for make in (fer.callbacks.EarlyStopping, fer.callbacks.ReduceLROnPlateau):
        with pytest.raises(FerValueError, match="patience must be >= 0"):
            make(patience=-1)
    # Monitoring the training loss needs no validation.
    model = fer.Model(TINY).fit(
        train, epochs=2, validation=0, callbacks=[fer.callbacks.EarlyStopping(monitor="loss")], progress=False
    )
    assert model.epochs_trained == 2


def test_callback_results_and_late_rate_changes(sample):
    train = sample[sample.Usage == "Training"].head(128)
    stopped = fer.Model(TINY).fit(train, epochs=3, validation=0, callbacks=[lambda e, logs: np.bool_(True)], progress=False)
    assert stopped.epochs_trained == 1  # numpy's True stops too
    # Setting the rate after the last epoch of a cosine run (a plateau at the end) is fine.
    model = fer.Model(TINY)
    model.fit(
        train, epochs=2, validation=0, lr_schedule="cosine", progress=False,
        callbacks=[lambda e, logs: setattr(model, "learning_rate", 5e-4)],
    )
    assert model.epochs_trained == 2
    with pytest.raises(TypeError, match="callback"):
        model.fit(train, epochs=1, callbacks=[42], progress=False)
    with pytest.raises(FerValueError, match="not fitting"):
        model._native.train_batch()  # rejected before any trainer was set up


def test_numpy_numbers_are_accepted(sample):
    train = sample[sample.Usage == "Training"].head(128)
    model = fer.Model(TINY).fit(
        train, epochs=np.int64(1), batch_size=np.int32(32), learning_rate=np.float32(1e-3),
        validation=np.float32(0.25), seed=np.uint8(3), progress=False,
    )
    assert model.epochs_trained == 1
    with pytest.raises(FerValueError, match="seed"):
        fer.Model(TINY).fit(train, epochs=1, seed=-1, progress=False)
    with pytest.raises(FerValueError, match="label_smoothing"):
        fer.Model(TINY).fit(train, epochs=1, label_smoothing=None, progress=False)


def test_weight_decay_with_adam_is_decoupled_as_in_keras(sample):
    train = sample[sample.Usage == "Training"].head(128)
    plain = fer.Model(TINY, seed=1).fit(train, epochs=1, validation=0, progress=False)
    decayed = fer.Model(TINY, seed=1).fit(train, epochs=1, validation=0, weight_decay=0.1, progress=False)
    adamw = fer.Model(TINY, seed=1).fit(train, epochs=1, validation=0, weight_decay=0.1, optimizer="adamw", progress=False)
    assert decayed.get_weights() != plain.get_weights()
    assert decayed.get_weights() == adamw.get_weights()


def test_a_batch_beyond_the_machines_memory_is_refused_up_front(sample, monkeypatch):
    train = sample[sample.Usage == "Training"]
    monkeypatch.setattr(fer.model, "_physical_memory", lambda: 2 * 2**30)
    model = fer.Model("fer_vgg", seed=0)
    # fer_vgg's activations are about 3.4 MiB per image: 700 images' worth
    # of them and their gradients is more than 2 GiB.
    with pytest.raises(FerValueError, match=r"batch_size=100000 needs at least 4\.\d GiB .* 2\.0 GiB of memory"):
        model.fit(train, epochs=1, batch_size=100_000, validation=0.1, progress=False)
    assert model.epochs_trained == 0
    # a batch as large as the Training rows is no bigger than they are
    with pytest.raises(FerValueError, match=r"batch_size=1000 needs at least 4\.\d GiB"):
        model.fit(train, epochs=1, batch_size=1000, validation=0.1, progress=False)
    model.fit(train.head(64), epochs=1, batch_size=32, validation=0, progress=False)
    assert model.epochs_trained == 1


def test_named_class_weights_are_the_weights_they_stand_for(sample):
    train = sample[sample.Usage == "Training"].head(128)
    counts = np.bincount(train.emotion, minlength=7).astype(float)
    # scikit-learn's "balanced": n_rows / (n_classes_present * count)
    balanced = [len(train) / ((counts > 0).sum() * c) if c else 1.0 for c in counts]

    def fit(weight):
        return fer.Model(TINY, seed=3).fit(train, epochs=1, validation=0, class_weight=weight, progress=False)

    plain = fit(None).get_weights()
    assert fit("balanced").get_weights() == fit(balanced).get_weights() != plain
    assert fit("sqrt").get_weights() == fit([math.sqrt(w) for w in balanced]).get_weights() != plain
    assert fit({3: 2.0}).get_weights() == fit([1, 1, 1, 2, 1, 1, 1]).get_weights() != plain
    with pytest.raises(FerValueError, match="'balanced', 'sqrt'.*'inverse'"):
        fit("inverse")
    with pytest.raises(FerValueError, match="keys must be labels 0-6"):
        fit({7: 1.0})
    with pytest.raises(FerValueError, match="needs 7 weights"):
        fit([1.0] * 6)
    with pytest.raises(FerValueError, match="finite, >= 0"):
        fit([1.0] * 6 + [float("nan")])


def test_labels_given_apart_keep_to_the_usage_rows(sample):
    together = fer.Model(TINY, seed=2).fit(sample, epochs=1, progress=False)
    apart = fer.Model(TINY, seed=2).fit(sample.drop(columns="emotion"), sample["emotion"], epochs=1, progress=False)
    n_train = int((sample.Usage == "Training").sum())
    assert apart.metadata["trained_on"] == together.metadata["trained_on"]
    assert sum(apart.metadata["trained_on"].values()) == n_train
    assert apart.get_weights() == together.get_weights()
    # evaluate with labels apart scores the test rows, as evaluate(df) does
    assert apart.evaluate(sample, sample["emotion"].to_numpy()).accuracy == apart.evaluate(sample).accuracy
    with pytest.raises(FerValueError, match="no Training rows"):
        fer.Model(TINY).fit(sample[sample.Usage != "Training"], sample.emotion[sample.Usage != "Training"], progress=False)


def test_macro_f1_counts_only_emotions_that_occur():
    from fer.metrics import report

    assert report([0, 0, 3, 3], [0, 0, 3, 3]).macro_f1 == 1.0
    assert report([0, 0, 3, 3], [0, 3, 3, 3]).macro_f1 == pytest.approx((2 / 3 + 0.8) / 2)


def test_saving_to_a_directory_is_a_clear_error(trained, tmp_path):
    with pytest.raises(IsADirectoryError, match="directory"):
        trained.save(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_specs_beyond_any_use_are_rejected():
    def spec(*layers, shape=(1, 48, 48)):
        return {"name": "x", "input_shape": list(shape), "layers": [*layers, {"type": "flatten"}, {"type": "dense", "units": 7, "activation": "softmax"}]}

    with pytest.raises(FerValueError, match="too large"):
        fer.Model(spec({"type": "conv2d", "filters": 1, "kernel": 2**32, "padding": 2**31 + 1}))
    with pytest.raises(FerValueError, match="padding 100000 must be smaller"):
        fer.Model(spec({"type": "conv2d", "filters": 1, "kernel": 3, "padding": 100000}))
    with pytest.raises(FerValueError, match="too large"):
        fer.Model(spec({"type": "flatten"}, {"type": "dense", "units": 10**8}))
    with pytest.raises(FerValueError, match="input_shape must be"):
        fer.Model(spec(shape=(4, 24, 24)))


def test_ctrl_c_stops_quickly_and_keeps_last_epoch(sample):
    class InterruptEpochTwo(fer.callbacks.Callback):
        """Sends Ctrl-C a quarter into epoch 2, timed by epoch 1's length, so
        that it lands mid-epoch on a 2-core VM and a 16-core machine alike."""

        fired = 0.0

        def on_epoch_end(self, epoch, logs):
            if epoch == 1:
                self.weights = self.model.get_weights()

                def fire():
                    self.fired = time.perf_counter()
                    _thread.interrupt_main()

                threading.Timer(logs["seconds"] / 4, fire).start()

    model = fer.Model("seed3x3", pooling="stride2")
    train = sample[sample.Usage == "Training"]
    cb = InterruptEpochTwo()
    with pytest.raises(KeyboardInterrupt):
        model.fit(train, epochs=50, progress=False, callbacks=[cb])
    stopped = time.perf_counter()
    # The interrupt lands between batches: allow one batch (~0.1 s here) on a busy machine.
    assert cb.fired > 0 and stopped - cb.fired < 4, (cb.fired, stopped)
    # Interrupted mid-epoch: the weights are those of the last completed epoch.
    assert len(model.history) == 1
    assert model.get_weights() == cb.weights


def test_pretrained_model_ships_and_predicts(sample):
    model = fer.pretrained()
    assert model.name == "fer_vgg" and model.epochs_trained > 0
    test = sample[sample.Usage == "PublicTest"]
    # fer.predict without a model uses the pretrained one.
    np.testing.assert_array_equal(fer.predict(test), model.predict(test))
    proba = fer.predict_proba(test)
    assert list(proba.columns) == list(fer.EMOTIONS) and (proba.index == test.index).all()
    np.testing.assert_allclose(proba.to_numpy().sum(axis=1), 1, rtol=1e-5)
    # Trained on the full Training split, never on PublicTest: far above the
    # 25% of always answering the majority class on the sample's test rows.
    assert model.evaluate(test).accuracy > 0.5
    one = fer.parse_pixels(test.pixels.head(1))[0]
    assert fer.predict(one).shape == (1,)
    # A fresh copy each call: changing one leaves the others as shipped.
    other = fer.pretrained()
    other.set_weights(fer.Model("fer_vgg").get_weights())
    assert other.get_weights() != model.get_weights() == fer.pretrained().get_weights()


def test_pretrained_missing_is_a_clear_error(monkeypatch):
    import fer.api

    def clear():
        fer.api._pretrained_bytes.cache_clear()
        fer.api._shared_pretrained.cache_clear()

    monkeypatch.setattr(fer.api, "PRETRAINED_FILE", "no-such-model.fer")
    clear()
    try:
        with pytest.raises(FerValueError, match="pretrained model file"):
            fer.predict(np.zeros((1, 48, 48), np.uint8))
        with pytest.raises(FerValueError, match="pretrained model file"):
            fer.pretrained()
    finally:
        clear()


def test_train_defaults_to_the_recipe_and_resumes(sample):
    train = sample[sample.Usage == "Training"].head(256)
    model = fer.train(train, TINY, epochs=1, progress=False, validation=0)
    # cosine with a one-epoch warm-up over one epoch: the rate rose to the base rate
    assert model.history.learning_rate.iloc[0] == pytest.approx(1e-3)
    assert fer.train(sample, epochs=1, progress=False).name == "fer_vgg"
    # the default class weights are the "sqrt" ones
    weighted = fer.train(train, TINY, epochs=1, progress=False, validation=0, class_weight="sqrt")
    unweighted = fer.train(train, TINY, epochs=1, progress=False, validation=0, class_weight=None)
    assert model.get_weights() == weighted.get_weights() != unweighted.get_weights()

    full = fer.train(train, TINY, epochs=3, progress=False, validation=0, warmup_epochs=0)
    part = fer.train(train, TINY, epochs=1, progress=False, validation=0, warmup_epochs=0)
    # Resuming a 3-epoch run after its first epoch continues its schedule.
    part = fer.train(train, part, epochs=3, initial_epoch=1, progress=False, validation=0, warmup_epochs=0)
    assert part.epochs_trained == 3
    np.testing.assert_allclose(part.history.learning_rate[1:], full.history.learning_rate[1:])
    assert part.history.learning_rate.iloc[0] < full.history.learning_rate.iloc[0]  # a 1-epoch cosine ends near 0
    with pytest.raises(FerValueError, match="initial_epoch"):
        fer.train(train, TINY, epochs=2, initial_epoch=2, progress=False)
    with pytest.raises(FerValueError, match="existing Model"):
        fer.train(train, part, epochs=4, pooling="same", progress=False)


def test_threads_setting():
    fer.set_num_threads(1)
    assert fer.get_num_threads() == 1
    fer.set_num_threads(0)
    assert fer.get_num_threads() >= 1
    with pytest.raises(FerValueError):
        fer.set_num_threads(-1)


_FORKED_MODEL = None


def _predict_in_child(x):
    return _FORKED_MODEL.predict_proba(x)


def test_fork_after_native_work_does_not_hang(trained, sample):
    import multiprocessing

    global _FORKED_MODEL
    _FORKED_MODEL = trained
    x = fer.parse_pixels(sample.pixels.head(20))
    expected = trained.predict_proba(x)  # starts fer's thread pool in this process
    with multiprocessing.get_context("fork").Pool(1) as pool:
        result = pool.apply_async(_predict_in_child, (x,)).get(timeout=60)
    np.testing.assert_array_equal(result, expected)


def test_models_go_to_spawned_workers(trained, sample):
    import concurrent.futures
    import multiprocessing

    x = fer.parse_pixels(sample.pixels.head(10))
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as ex:
        result = ex.submit(_call_predict_proba, trained, x).result(timeout=120)
    np.testing.assert_array_equal(result, trained.predict_proba(x))


def _call_predict_proba(model, x):
    return model.predict_proba(x)


def test_time_limit_sizes_the_run_and_its_schedule(sample, monkeypatch):
    train = sample[sample.Usage == "Training"].head(256)
    clock = [0.0]
    monkeypatch.setattr(fer.model.time, "perf_counter", lambda: clock[0])

    def epoch_takes(*seconds):
        def tick(epoch, logs):
            clock[0] += seconds[min(epoch, len(seconds)) - 1]

        return tick

    budget = fer.train(train, TINY, time_limit=45, callbacks=[epoch_takes(10)], progress=False, validation=0)
    assert budget.epochs_trained == 4
    # Sized after its first epoch, the run is the one planned with that length.
    planned = fer.train(train, TINY, epochs=4, progress=False, validation=0)
    np.testing.assert_allclose(budget.history.learning_rate, planned.history.learning_rate)
    assert budget.get_weights() == planned.get_weights()

    # Epochs that slow down shrink the plan; the cosine still ends at the last one.
    clock[0] = 0.0
    slower = fer.train(train, TINY, time_limit=100, callbacks=[epoch_takes(10, 30)], progress=False, validation=0)
    assert slower.epochs_trained == 4
    assert slower.history.learning_rate.iloc[-1] < 0.05 * 1e-3

    # With epochs given, the limit only stops the run (after the epoch it passed in).
    clock[0] = 0.0
    capped = fer.Model(TINY).fit(train, epochs=10, time_limit=25, callbacks=[epoch_takes(10)], progress=False, validation=0)
    assert capped.epochs_trained == 3
    assert fer.Model(TINY).fit(train.head(64), progress=False, validation=0).epochs_trained == 10

    with pytest.raises(FerValueError, match="one_cycle"):
        fer.train(train, TINY, time_limit=10, lr_schedule="one_cycle", progress=False)
    with pytest.raises(FerValueError, match="initial_epoch"):
        fer.train(train, TINY, time_limit=10, initial_epoch=1, progress=False)


def test_augmentation_schedules_and_tta(sample):
    train = sample[sample.Usage == "Training"].head(200)
    plain = fer.Model(TINY, seed=1).fit(train, epochs=1, progress=False, validation=0)
    aug = fer.Model(TINY, seed=1).fit(train, epochs=1, progress=False, validation=0, augment=True)
    again = fer.Model(TINY, seed=1).fit(train, epochs=1, progress=False, validation=0, augment=True)
    assert aug.get_weights() != plain.get_weights()
    assert aug.get_weights() == again.get_weights()  # seeded
    custom = fer.Model(TINY, seed=1).fit(
        train, epochs=1, progress=False, validation=0, augment={"rotation": 0, "erasing": 0.5}
    )
    assert custom.get_weights() != aug.get_weights()
    with pytest.raises(FerValueError, match="rotation"):
        fer.Model(TINY).fit(train, epochs=1, progress=False, augment={"rotation": -5})
    with pytest.raises(FerValueError, match="unknown field|invalid augmentation"):
        fer.Model(TINY).fit(train, epochs=1, progress=False, augment={"hue": 0.1})

    cos = fer.Model(TINY).fit(train, epochs=3, progress=False, validation=0, lr_schedule="cosine", learning_rate=0.01)
    lrs = cos.history.learning_rate.tolist()
    assert lrs[0] > lrs[1] > lrs[2] >= 0 and lrs[0] <= 0.01
    with pytest.raises(FerValueError, match="lr_schedule"):
        fer.Model(TINY).fit(train, epochs=1, progress=False, lr_schedule="step")

    x = fer.parse_pixels(sample.pixels.head(6))
    base = plain.predict_proba(x)
    flip = plain.predict_proba(x, tta="flip")
    mirrored = plain.predict_proba(x[:, :, ::-1].copy())
    np.testing.assert_allclose(flip, (base + mirrored) / 2, rtol=1e-4, atol=1e-6)
    crops = plain.predict_proba(x, tta="crops")
    np.testing.assert_allclose(crops.sum(axis=1), 1, rtol=1e-5)
    assert not np.allclose(crops, base) and not np.allclose(crops, flip)
    report = plain.evaluate(sample, tta="flip")
    assert 0 <= report.accuracy <= 1
    with pytest.raises(FerValueError, match="tta"):
        plain.predict(x, tta="rotate")
