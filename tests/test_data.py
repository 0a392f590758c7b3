import numpy as np
import pandas as pd
import pytest

import fer
from fer.errors import FerValueError


def test_version_and_emotions():
    assert isinstance(fer.__version__, str) and fer.__version__.count(".") == 2
    assert fer.EMOTIONS == ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
    assert set(fer.__all__) <= set(dir(fer))


def test_exceptions_subclass_builtins():
    assert issubclass(fer.FerValueError, ValueError)
    assert issubclass(fer.ModelFileError, ValueError)
    assert issubclass(fer.FerInternalError, RuntimeError)


def test_bundled_sample_is_stratified(sample):
    assert len(sample) <= 1000
    assert list(sample.columns) == ["emotion", "pixels", "Usage"]
    for usage in ("Training", "PublicTest"):
        assert set(sample.loc[sample.Usage == usage, "emotion"]) == set(range(7))


def test_parse_pixels_matches_numpy(sample):
    x = fer.parse_pixels(sample.pixels)
    ref = np.stack([np.array(s.split(), dtype=np.uint8) for s in sample.pixels]).reshape(-1, 48, 48)
    assert x.dtype == np.uint8 and x.shape == (len(sample), 48, 48)
    assert x.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(x, ref)


def test_parse_pixels_accepts_lists_arrays_frames(sample):
    head = sample.head(3)
    expected = fer.parse_pixels(head.pixels)
    np.testing.assert_array_equal(fer.parse_pixels(list(head.pixels)), expected)
    np.testing.assert_array_equal(fer.parse_pixels(head.pixels.to_numpy(dtype=object)), expected)
    np.testing.assert_array_equal(fer.parse_pixels(head), expected)
    np.testing.assert_array_equal(fer.parse_pixels(head.pixels.iloc[0]), expected[:1])
    assert fer.parse_pixels([]).shape == (0, 48, 48)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda s: s + " 7", "has 2305 values, expected 2304"),
        (lambda s: s.rsplit(" ", 1)[0], "has 2303 values, expected 2304"),
        (lambda s: "abc " + s.split(" ", 1)[1], "'abc'"),
        (lambda s: "3.5 " + s.split(" ", 1)[1], "not an integer"),
        (lambda s: "256 " + s.split(" ", 1)[1], "256 (value number 1) is outside 0-255"),
        (lambda s: "-4 " + s.split(" ", 1)[1], "outside 0-255"),
        (lambda s: "", "is empty"),
        (lambda s: float("nan"), "missing (NaN)"),
        (lambda s: None, "missing (None)"),
        (lambda s: 17, "is a int"),
    ],
)
def test_parse_pixels_names_the_bad_row(tiny_df, mutate, expected):
    series = tiny_df.pixels.astype(object).copy()
    series.loc[13] = mutate(series.loc[13])
    with pytest.raises(FerValueError) as info:
        fer.parse_pixels(series)
    message = str(info.value)
    assert "row 13" in message, message
    assert expected.replace("'abc'", '"abc"') in message or expected in message, message


def test_parse_pixels_rejects_non_sequences():
    with pytest.raises(TypeError):
        fer.parse_pixels(42)
    with pytest.raises(FerValueError, match="no 'pixels' column"):
        fer.parse_pixels(pd.DataFrame({"x": [1]}))


def test_split_by_usage_and_stratified(sample):
    parts = fer.split(sample, validation=0.1, seed=0)
    training = sample[sample.Usage == "Training"]
    assert len(parts.train) + len(parts.validation) == len(training)
    assert (parts.test.Usage == "PublicTest").all() and len(parts.test) == (sample.Usage == "PublicTest").sum()
    assert set(parts.train.index).isdisjoint(parts.validation.index)
    # Every class keeps about 10% in validation.
    for label in range(7):
        n = (training.emotion == label).sum()
        assert (parts.validation.emotion == label).sum() == round(n * 0.1)
    again = fer.split(sample, validation=0.1, seed=0)
    assert list(again.validation.index) == list(parts.validation.index)
    other = fer.split(sample, validation=0.1, seed=1)
    assert list(other.validation.index) != list(parts.validation.index)


def test_split_includes_private_test_and_handles_no_usage(tiny_df):
    df = tiny_df.copy()
    df.loc[15, "Usage"] = "PrivateTest"
    parts = fer.split(df, validation=0.0)
    assert list(parts.test.index) == [14, 15] and len(parts.validation) == 0
    parts = fer.split(df.drop(columns="Usage"), validation=0.0)
    assert len(parts.train) == 6 and len(parts.test) == 0


def test_split_errors_name_the_problem(tiny_df):
    with pytest.raises(FerValueError, match=r"missing column\(s\) \['emotion'\]; found columns \['pixels', 'Usage'\]"):
        fer.split(tiny_df.drop(columns="emotion"))
    bad = tiny_df.copy()
    bad.loc[12, "emotion"] = 9
    with pytest.raises(FerValueError, match=r"emotion at row 12: 9 is outside 0-6"):
        fer.split(bad)
    bad = tiny_df.copy()
    bad.loc[11, "Usage"] = "Validation"
    with pytest.raises(FerValueError, match="unknown value"):
        fer.split(bad)
    with pytest.raises(FerValueError, match="validation must be"):
        fer.split(tiny_df, validation=1.5)
    with pytest.raises(TypeError):
        fer.split([1, 2, 3])


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.array([0, 3.5], dtype=object), r"label at row 1: 3.5 is not an integer label"),
        (np.array([1, "happy", 2], dtype=object), r"label at row 1: 'happy' is not an integer label"),
        (np.array([0.0, np.nan]), r"label at row 1: nan is not an integer label"),
        (np.array([1e20]), r"label at row 0: 1e\+20 is not an integer label"),
        (np.array([True, False]), r"got booleans"),
        (np.full((2, 7), 1 / 7), r"not one-hot rows.*argmax"),
        (np.zeros((2, 3)), r"must be 1-D class indices"),
    ],
)
def test_bad_labels_name_the_row_and_the_value(labels, message):
    x = np.zeros((2, 48, 48), np.float32)
    with pytest.raises(FerValueError, match=message):
        fer._inputs.as_xy(x, labels)


def test_labels_as_text_column_vector_or_one_hot():
    x = np.zeros((7, 48, 48), np.float32)
    for y in (np.array([str(k) for k in range(7)]), np.arange(7)[:, None], np.eye(7), np.eye(7, dtype=bool)):
        assert fer._inputs.as_xy(x, y)[1].tolist() == list(range(7))
