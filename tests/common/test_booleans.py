"""One set of true/false words (byoc_common.booleans) for hyperparameters, byoc settings, the serving
image's environment and Debugger rule parameters: each reads every word the same, refuses the same."""

from __future__ import annotations

import pytest

from byoc.rules.tensor_rules import ExplodingTensor
from byoc.settings import ConfigError, load_settings
from byoc_common.booleans import FALSE_WORDS, TRUE_WORDS
from container_serve.settings import ServeSettings, SettingsError
from container_train.hyperparameters import HyperparameterError, Hyperparameters

READERS = {
    "hyperparameter": lambda word: Hyperparameters.parse({"amp": word})["amp"],
    "byoc setting": lambda word: load_settings(config_path=None, overrides={}, environ={"BYOC_SPOT": word}).spot,
    "serving env": lambda word: ServeSettings.from_env({"BYOC_FORK_SERVER": word}).fork_server,
    "rule parameter": lambda word: ExplodingTensor._parse({"only_nan": word})["only_nan"],
}
WORDS = [(w, True) for w in TRUE_WORDS] + [(w, False) for w in FALSE_WORDS]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("word, expected", [*WORDS, *((w.upper(), e) for w, e in WORDS), (" True ", True)])
def test_every_reader_reads_every_word_alike(reader, word, expected):
    assert READERS[reader](word) is expected


@pytest.mark.parametrize("reader", READERS)
def test_every_reader_refuses_other_words_naming_the_accepted_ones(reader):
    with pytest.raises((HyperparameterError, ConfigError, SettingsError, ValueError), match="true/1/yes"):
        READERS[reader]("maybe")
