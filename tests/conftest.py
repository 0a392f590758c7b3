import signal

import numpy as np
import pandas as pd
import pytest

import fer


@pytest.fixture(scope="session", autouse=True)
def sigint_raises_keyboardinterrupt():
    """The Ctrl-C tests need SIGINT to raise KeyboardInterrupt, here and in the
    `fer` processes they start. A shell that runs the suite in the background
    without job control (`cmd &` in a script) starts it with SIGINT ignored,
    which Python then leaves ignored; Python's own handler is installed for the
    session instead (children get the default action back on exec)."""
    before = signal.getsignal(signal.SIGINT)
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, before)


@pytest.fixture(scope="session")
def sample() -> pd.DataFrame:
    return fer.load_sample()


def pixel_string(values) -> str:
    return " ".join(str(int(v)) for v in values)


@pytest.fixture
def tiny_df() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = [pixel_string(rng.integers(0, 256, 2304)) for _ in range(6)]
    return pd.DataFrame(
        {"emotion": [0, 1, 2, 3, 4, 5], "pixels": rows, "Usage": ["Training"] * 4 + ["PublicTest"] * 2},
        index=[10, 11, 12, 13, 14, 15],
    )
