"""Secrets for venue adapters: errors name where a secret was looked for, never its value."""

from __future__ import annotations

import pytest

from live.alpaca import AlpacaBroker, AlpacaConfig
from live.secrets import load_secret
from quantshift.errors import ConfigError

KEY_ID = "PKQSTESTKEYID0000001"
SECRET = "qs-test-secret-must-never-be-printed"


def _secrets_file(tmp_path, text: str):
    path = tmp_path / "secrets.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_a_typo_in_the_secrets_file_is_one_line_naming_the_file_and_position(tmp_path):
    # The unquoted value is a TOML syntax error; Python 3.11's TOMLDecodeError has no lineno.
    path = _secrets_file(tmp_path, f'alpaca_key_id = "{KEY_ID}"\nalpaca_secret_key = {SECRET}\n')
    with pytest.raises(ConfigError) as caught:
        load_secret("alpaca_secret_key", env="QS_TEST_UNSET_VARIABLE", secrets_file=path)
    message = str(caught.value)
    assert str(path) in message and "not valid TOML (line 2, column" in message
    assert SECRET not in message and KEY_ID not in message and "\n" not in message


@pytest.mark.parametrize("pasted", [KEY_ID, "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI"])
def test_a_secrets_file_value_pasted_into_an_env_field_is_never_echoed(tmp_path, pasted):
    path = _secrets_file(
        tmp_path, f'alpaca_key_id = """{pasted}"""\nalpaca_secret_key = "{SECRET}"\n'
    )
    config = AlpacaConfig(mode="paper", key_id_env=pasted, secrets_file=str(path))
    with pytest.raises(ConfigError, match="key_id_env") as caught:
        AlpacaBroker(config)
    assert pasted not in str(caught.value) and pasted.split("\n")[0] not in str(caught.value)


def test_a_secrets_file_that_cannot_be_read_is_one_line_naming_it(tmp_path):
    folder = tmp_path / "secrets.toml"
    folder.mkdir(mode=0o700)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b'alpaca_key_id = "\xff\xfe"\n')
    binary.chmod(0o600)
    for path, why in ((folder, "Is a directory"), (binary, "not UTF-8 text")):
        with pytest.raises(ConfigError, match="cannot be read") as caught:
            load_secret("alpaca_key_id", env="QS_TEST_UNSET_VARIABLE", secrets_file=path)
        assert str(path) in str(caught.value) and why in str(caught.value)
