"""A passkey typed by the user: accepted as 1 to 6 ASCII digits, refused with an error that
never repeats what was typed, and never shown by repr or str."""

from __future__ import annotations

import pytest

from bluez_jk.names import Passkey


def test_digits_are_a_passkey_that_never_shows() -> None:
    passkey = Passkey.parse(" 012345\n")
    assert passkey.value == 12345
    assert "12345" not in repr(passkey)
    assert "12345" not in str(passkey)


@pytest.mark.parametrize("text", ["", "12a456", "1234567", "-12345", "\uff11\uff12\uff13"])
def test_anything_else_is_refused_without_repeating_it(text: str) -> None:
    with pytest.raises(ValueError, match="1 to 6 digits") as info:
        Passkey.parse(text)
    if text.strip():
        assert text.strip() not in str(info.value)
