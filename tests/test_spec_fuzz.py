"""Property test of the spec parser: any string gives a valid spec or a SpecError, never another exception."""
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_unlearn.spec import SpecError, SubgroupSpec

ALPHABET = st.sampled_from(list("ab=,= ,xyz01_-.\t\n") + ["label", "domain", "é", "\x00"])


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.lists(ALPHABET, max_size=12).map("".join)))
def test_random_strings_parse_or_raise_spec_error(text):
    try:
        spec = SubgroupSpec.parse(text)
    except SpecError:
        return
    assert spec.conditions and all(c and v for c, v in spec.conditions)
    assert SubgroupSpec.parse(str(spec)) == spec  # a parsed spec prints back to the same spec
