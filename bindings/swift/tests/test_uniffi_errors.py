"""The category -> error case table, through uniffi's generated Python (the same FFI as Swift)."""

import b3iq_uniffi as b
import pytest

# The one category -> case table (docs/bindings.md).
CATEGORY_CASES = {
    "invalid_input": b.B3iqError.InvalidInput,
    "unauthenticated": b.B3iqError.Auth,
    "expired": b.B3iqError.Expired,
    "replayed": b.B3iqError.Replay,
    "policy_denied": b.B3iqError.Policy,
    "state": b.B3iqError.State,
    "io": b.B3iqError.Io,
    "runtime": b.B3iqError.Runtime,
    "internal": b.B3iqError.Internal,
}


def test_every_error_category_throws_its_case_with_code_and_cause():
    # Every category the core defines, in its order: a new one fails here until it is mapped.
    assert b.testing_error_categories() == list(CATEGORY_CASES)
    for category, case in CATEGORY_CASES.items():
        with pytest.raises(b.B3iqError) as err:
            b.testing_error_for_category(category)
        assert type(err.value) is case, category
        assert err.value.code == "error_probe", category
        assert category in err.value.message
        assert err.value.message.endswith(": the probe's cause"), err.value.message
    with pytest.raises(b.B3iqError.InvalidInput) as err:
        b.testing_error_for_category("nope")
    assert err.value.code == "invalid_input"
