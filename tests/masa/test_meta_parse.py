"""Meta prediction parsing: the last JSON object with a known key; hostile text never raises."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peirce.masa import parse
from peirce.masa.parse import MAX_ATTEMPTS, MAX_DECODE_CHARS, MAX_TAIL_CHARS, candidate_starts, parse_prediction, scan
from peirce.masa.types import MetaPrediction

GOOD = ('<meta>The problem needs modular arithmetic; about half of the attempts fail.</meta>\n'
        '{"notions": ["modular arithmetic", " Fermat\'s little theorem ", ""], "pass_rate": 3, "solution_length": 420}')


def test_a_well_formed_response():
    p = parse_prediction(GOOD)
    assert p == MetaPrediction(found=True, notions=("modular arithmetic", "Fermat's little theorem"), pass_rate=3,
                               solution_length=420,
                               reasoning="The problem needs modular arithmetic; about half of the attempts fail.")


def test_alias_key_and_precedence():
    assert parse_prediction('{"math_notion": ["parity"], "pass_rate": 8}').notions == ("parity",)
    both = parse_prediction('{"math_notion": ["parity"], "notions": ["induction"]}')
    assert both.notions == ("induction",)
    wrong = parse_prediction('{"math_notion": ["parity"], "notions": "induction"}')
    assert wrong.notions is None  # `notions` is present, so it decides (and is the wrong type)


def test_last_object_with_a_known_key_wins():
    text = ('example: {"notions": ["x"], "pass_rate": 8, "solution_length": 10} '
            'answer: {"notions": ["y"], "pass_rate": 2, "solution_length": 99} trailing {"other": 1} {1} {')
    p = parse_prediction(text)
    assert (p.notions, p.pass_rate, p.solution_length) == (("y",), 2, 99)


def test_enclosing_object_beats_a_nested_one_and_nested_keys_count_without_it():
    outer = parse_prediction('{"pass_rate": 4, "extra": {"pass_rate": 7}, "solution_length": 12}')
    assert (outer.pass_rate, outer.solution_length) == (4, 12)
    inner = parse_prediction('{"answer": {"pass_rate": 7}}')
    assert inner.pass_rate == 7


def test_malformed_json_falls_back_to_the_last_object_that_decodes():
    p = parse_prediction('{"pass_rate": 3} then a broken one: {"pass_rate": 5, "notions": [')
    assert p.pass_rate == 3
    assert parse_prediction("{'pass_rate': 3}") == MetaPrediction()  # Python dict repr is not JSON
    assert parse_prediction("no json here <meta>why</meta>") == MetaPrediction(reasoning="why")
    assert parse_prediction("") == MetaPrediction()
    assert parse_prediction(None) == MetaPrediction()  # type: ignore[arg-type]


def test_a_wrong_type_in_the_last_object_does_not_fall_back():
    p = parse_prediction('{"pass_rate": 3} {"pass_rate": 3.0}')
    assert p.found and p.pass_rate is None


@pytest.mark.parametrize("value, expected", [
    ("3", 3), ("0", 0), ("8", 8),
    ("true", None), ("false", None),  # a bool is not an int
    ("3.0", None), ("2.5", None), ("1e0", None),  # a float is the wrong type, even a whole one
    ('"3"', None), ("[3]", None), ("null", None),
    ("9", None), ("-1", None),  # outside 0..k
    ("NaN", None), ("Infinity", None), ("-Infinity", None), ("1e400", None),
    ("1" * 19, None), ("1" * 5000, None),  # huge ints never become Python ints
])
def test_pass_rate_types(value, expected):
    assert parse_prediction('{"pass_rate": %s}' % value, k=8).pass_rate == expected


def test_pass_rate_range_follows_k():
    assert parse_prediction('{"pass_rate": 16}', k=16).pass_rate == 16
    assert parse_prediction('{"pass_rate": 16}', k=8).pass_rate is None


@pytest.mark.parametrize("value, expected", [
    ("420", 420), ("1", 1), ("0", None), ("-5", None), ("true", None), ("420.0", None), ('"420"', None),
    ("9" * 18, int("9" * 18)), ("9" * 19, None),
])
def test_solution_length_types(value, expected):
    assert parse_prediction('{"solution_length": %s}' % value).solution_length == expected


@pytest.mark.parametrize("value", [
    '"modular arithmetic, parity"',  # the released code splits this on commas; peirce scores it 0
    '["a", 3]', '["a", null]', '["a", ["b"]]', '{"a": 1}', "42", "true",
    json.dumps(["n"] * (parse.MAX_NOTIONS + 1)), json.dumps(["x" * (parse.MAX_NOTION_CHARS + 1)]),
])
def test_notions_of_the_wrong_shape_are_none(value):
    p = parse_prediction('{"notions": %s, "pass_rate": 1}' % value)
    assert p.notions is None and p.pass_rate == 1


def test_notions_at_the_limits_are_kept():
    p = parse_prediction(json.dumps({"notions": ["n"] * parse.MAX_NOTIONS}))
    assert p.notions == ("n",) * parse.MAX_NOTIONS
    assert parse_prediction('{"notions": []}').notions == ()


def test_an_object_outside_the_tail_is_not_found():
    text = '{"pass_rate": 3}' + " " * MAX_TAIL_CHARS
    assert parse_prediction(text) == MetaPrediction()
    assert parse_prediction(text[: MAX_TAIL_CHARS - 1]).pass_rate == 3


MB = 1 << 20
HOSTILE = {
    "open braces": "{" * MB,
    "open key starts": '{"' * (MB // 2),
    "deep nesting": '{"pass_rate":' * (MB // 13),
    "closed deep nesting": '{"a":' * 50_000 + "1" + "}" * 50_000,
    "unterminated string": '{"notions": ["' + "x" * MB,
    "many small objects": '{"pass_rate": 1}' * (MB // 16),
    "arrays": "[" * MB + "]" * MB,
    "huge int": '{"pass_rate": ' + "9" * MB + "}",
    "huge float": '{"solution_length": 1.' + "5" * MB + "}",
    "lone surrogates": '{"notions": ["\ud800"]}' + "\udfff" * 1000,
    "escapes": '{"notions": ["' + "\\u0000" * (MB // 6) + '"]}',
    # 256 nested starts, each of whose decodes would run through a 60 KB array of ints
    "overlapping long candidates": '{"a":' * 256 + "[" + "1," * ((MAX_TAIL_CHARS - 1300) // 2),
}


@pytest.mark.timeout(120)  # a hang guard only: the bound below is structural
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_text_never_raises_and_work_is_bounded(name):
    text = HOSTILE[name]
    p = parse_prediction(text)
    assert isinstance(p, MetaPrediction)
    tail = text[-MAX_TAIL_CHARS:]
    assert len(candidate_starts(tail)) <= MAX_ATTEMPTS
    _, work = scan(tail)
    assert work <= MAX_DECODE_CHARS + MAX_TAIL_CHARS  # the budget, plus the one attempt that crossed it


def test_hostile_results():
    _, work = scan(HOSTILE["overlapping long candidates"])  # the budget is what stops it (256 x 60 KB otherwise)
    assert MAX_DECODE_CHARS <= work <= MAX_DECODE_CHARS + MAX_TAIL_CHARS
    assert parse_prediction(HOSTILE["many small objects"]).pass_rate == 1
    assert parse_prediction(HOSTILE["huge int"]) == MetaPrediction()  # past the tail: its start is not seen
    assert parse_prediction('{"pass_rate": ' + "9" * 1000 + "}") == MetaPrediction(found=True)
    assert parse_prediction(HOSTILE["lone surrogates"]).notions == ("\ud800",)
    assert parse_prediction(HOSTILE["closed deep nesting"]) == MetaPrediction()


def test_the_answer_survives_many_decoy_starts_before_it():
    text = '{"' * 100_000 + " " + GOOD
    assert parse_prediction(text).pass_rate == 3


_FRAGMENTS = st.sampled_from([
    "{", "}", "[", "]", '"', ":", ",", "\\", '{"', '"notions"', '"math_notion"', '"pass_rate"', '"solution_length"',
    "3", "-1", "1e400", "NaN", "Infinity", "true", "null", "2.5", "9" * 30, '"a"', "<meta>", "</meta>", " ", "\n",
    '{"pass_rate": 3}', '{"notions": ["x", "y"]}', "\ud800",
])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_FRAGMENTS, st.text(max_size=20)), max_size=200), st.integers(1, 16))
def test_fuzz_never_raises_and_fields_are_well_typed(parts, k):
    p = parse_prediction("".join(parts), k=k)
    assert isinstance(p, MetaPrediction)
    assert p.pass_rate is None or (type(p.pass_rate) is int and 0 <= p.pass_rate <= k)
    assert p.solution_length is None or (type(p.solution_length) is int and p.solution_length >= 1)
    assert p.notions is None or all(type(n) is str and n and n == n.strip() for n in p.notions)
    assert p.found or (p.notions is None and p.pass_rate is None and p.solution_length is None)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["notions", "pass_rate", "solution_length", "x"]),
                       st.one_of(st.integers(-3, 20), st.booleans(), st.floats(allow_nan=True), st.text(max_size=5),
                                 st.lists(st.text(max_size=5), max_size=3)), min_size=1),
       st.text(max_size=50))
def test_fuzz_round_trips_what_json_dumps_writes(obj, prefix):
    p = parse_prediction(prefix.replace("{", "(") + json.dumps(obj))
    if set(obj) & {"notions", "pass_rate", "solution_length"}:
        want_rate = obj.get("pass_rate")
        assert p.pass_rate == (want_rate if type(want_rate) is int and 0 <= want_rate <= 8 else None)
        want_notions = obj.get("notions")
        if isinstance(want_notions, list):
            assert p.notions == tuple(s for n in want_notions if (s := n.strip()))
        else:
            assert p.notions is None
