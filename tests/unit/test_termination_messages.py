"""A termination message is written by the pod's image, which whoever writes the resource chooses: the operator
reads it as untrusted input. Whatever it holds (malformed or deeply nested JSON, keys of the wrong type, a zlib
bomb, control characters, lone surrogates, megabytes), parsing never raises, what is kept is bounded, typed and
printable, and the step is reported as failed (issue 14, item 5)."""

from __future__ import annotations

import base64
import copy
import json
import zlib
from typing import Any

import pytest
from divbase_migrations import contract
from divbase_operator import names
from divbase_operator.observed import JOB_FAILED, pod_from_body
from divbase_operator.planner import EmitEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from planner_world import World, base_spec

BOMB = base64.b64encode(zlib.compress(b"-- " + b"x" * (8 * 1024 * 1024), 9)).decode()  # 8 MiB inflated, 11 KiB sent
DIGEST = "sha256:" + "a" * 64

NASTY = {
    "malformed": '{"error": "cut off',
    "deep_arrays": "[" * 100_000,
    "deep_objects": '{"error":' * 50_000,
    "deep_inside_a_key": '{"to": ' + "[" * 5000 + "]" * 5000 + "}",
    "error_is_int": '{"error": 1}',
    "error_is_object": '{"error": {"nested": ["x"]}}',
    "revisions_is_int": '{"revisions": 5}',
    "to_is_int": '{"to": 5}',
    "to_holds_ints": '{"to": {"expand": 5, "contract": [1]}}',
    "exit_code_is_string": '{"exit_code": "2", "error": "boom"}',
    "digest_not_a_digest": '{"digest": "sha256:zz", "sql_z": "eJw="}',
    "nan": '{"duration_s": NaN, "error": "x"}',
    "huge_int": '{"exit_code": ' + "9" * 10_000 + "}",
    "zlib_bomb": json.dumps({"digest": DIGEST, "sql_z": BOMB}),
    "not_base64": json.dumps({"digest": DIGEST, "sql_z": "!!!"}),
    "control_chars": json.dumps({"error": "red \x1b[31malert\x07\x00 \u202eevil\u200b\r\nnext"}),
    "lone_surrogates": '{"error": "a\\ud800b\\udfffc", "to": {"expand": "r\\ud800"}}',
    "huge_message": "x" * 5_000_000 + '\n{"error": "the end"}',
    "huge_error": json.dumps({"error": "e" * 1_000_000}),
    "a_list": "[1, 2, 3]",
    "empty": "",
    "only_newlines": "\n\n\n",
    "binary_junk": "\x00\xff\ufffe\U0010ffff" * 1000,
}


def _clean(text: str) -> bool:
    return all(ch.isprintable() for ch in text)


class Measured:
    """What the contract module parses and inflates, counted where it happens: its `json` and `zlib` as they are,
    but recording the length of every text `json.loads` is given and every byte a decompressor hands back. A bound
    on those is what makes parsing cheap whatever the message (a time limit would only say how fast this machine
    is)."""

    def __init__(self) -> None:
        self.parsed: list[int] = []
        self.inflated = 0
        measured = self

        class Json:
            def __getattr__(self, name: str) -> Any:
                return getattr(json, name)

            def loads(self, text: str, **kwargs: Any) -> Any:
                measured.parsed.append(len(text))
                return json.loads(text, **kwargs)

        class Inflater:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def __getattr__(self, name: str) -> Any:
                return getattr(self.inner, name)

            def decompress(self, data: bytes, max_length: int = 0) -> bytes:
                out = self.inner.decompress(data, max_length)
                measured.inflated += len(out)
                return out

        class Zlib:
            def __getattr__(self, name: str) -> Any:
                return getattr(zlib, name)

            def decompressobj(self, *args: Any, **kwargs: Any) -> Inflater:
                return Inflater(zlib.decompressobj(*args, **kwargs))

        self.json, self.zlib = Json(), Zlib()


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> Measured:
    counts = Measured()
    monkeypatch.setattr(contract, "json", counts.json)
    monkeypatch.setattr(contract, "zlib", counts.zlib)
    return counts


@pytest.mark.parametrize("message", list(NASTY.values()), ids=list(NASTY))
def test_read_summary_never_raises_and_keeps_only_typed_keys(message: str, measured: Measured) -> None:
    summary, problems = contract.read_summary(message)
    assert set(summary) <= set(contract.SUMMARY_KEYS)
    assert all(_clean(p) for p in problems.values())
    if "error" in summary:
        assert isinstance(summary["error"], str)
    sql, _ = contract.read_plan(summary)
    assert sql is None or len(sql.encode()) <= contract.MAX_PLAN_SQL_BYTES
    # parsing is bounded: at most the message's tail reaches the JSON parser, at most the plan bound is inflated
    assert max(measured.parsed, default=0) <= contract.MAX_SUMMARY_CHARS, (len(message), measured.parsed)
    assert measured.inflated <= contract.MAX_PLAN_SQL_BYTES + 1
    assert contract.parse_summary(message) == summary


@pytest.mark.parametrize(
    ("message", "key"),
    [
        ('{"error": 1}', "error"),
        ('{"revisions": 5}', "revisions"),
        ('{"to": 5}', "to"),
        ('{"exit_code": true}', "exit_code"),
        ('{"digest": "md5:00"}', "digest"),
        ('{"sql_truncated": "yes"}', "sql_truncated"),
    ],
)
def test_a_key_of_the_wrong_type_is_named_never_quoted(message: str, key: str) -> None:
    summary, problems = contract.read_summary(message)
    assert key not in summary and key in problems
    assert f"`{key}`" in problems[key]
    assert "md5" not in problems[key] and "yes" not in problems[key]


def test_a_zlib_bomb_is_refused_before_it_is_inflated(measured: Measured) -> None:
    sql, problem = contract.read_plan({"digest": DIGEST, "sql_z": BOMB})
    assert sql is None and problem is not None and "inflates to more than" in problem
    assert 0 < measured.inflated <= contract.MAX_PLAN_SQL_BYTES + 1, "inflated past the bound, not the 8 MiB"


def test_a_plan_whose_sql_does_not_match_its_digest_is_refused() -> None:
    payload = contract.plan_payload("DROP TABLE a;\n")
    assert contract.read_plan(payload) == ("DROP TABLE a;\n", None)
    forged = {**payload, "digest": contract.plan_digest("SELECT 1;\n")}
    sql, problem = contract.read_plan(forged)
    assert sql is None and problem is not None and "does not match" in problem


def test_printable_strips_controls_format_and_surrogates() -> None:
    assert contract.printable("a\x1b[31mb\x00c\u202ed\u200be\ud800f\r\ng\th", None) == "a[31mbcdef g h"
    assert contract.printable("x" * 50, 10) == "x" * 7 + "..."
    assert contract.printable(None) == "" and contract.printable("\n\x00\n") == ""


def test_the_pod_observation_keeps_only_the_tail_and_an_integer_exit_code() -> None:
    pod = pod_from_body(
        {
            "metadata": {"name": "p"},
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {"state": {"terminated": {"exitCode": "2", "message": "x" * 1_000_000 + '\n{"error":"tail"}'}}}
                ],
            },
        }
    )
    assert pod.exit_code is None
    assert pod.termination_message is not None
    assert len(pod.termination_message) == contract.MAX_SUMMARY_CHARS
    assert contract.parse_summary(pod.termination_message) == {"error": "tail"}
    odd = pod_from_body(
        {
            "metadata": {"name": "p"},
            "status": {
                "containerStatuses": [{"state": {"terminated": {"exitCode": 1, "message": {"not": "a string"}}}}]
            },
        }
    )
    assert odd.termination_message is None and odd.exit_code == 1


# --- the planner, fed any termination message -----------------------------------------------------------------
def _texts_in(decision_status: dict[str, Any], events: list[EmitEvent]) -> list[str]:
    texts = [c.get("message", "") for c in decision_status.get("conditions", [])]
    texts += [(decision_status.get("lastFailure") or {}).get("message") or ""]
    for rec in ((decision_status.get("rollout") or {}).get("steps") or {}).values():
        texts.append(rec.get("message") or "")
    texts += [e.message for e in events]
    return texts


def _assert_publishable(world: World) -> None:
    """What the operator would write: JSON, UTF-8 (no lone surrogate), printable and bounded where it is text."""
    body = json.dumps(world.status, ensure_ascii=False).encode()
    assert body
    events = [a for d in world.log for a in d.actions if isinstance(a, EmitEvent)]
    for text in _texts_in(world.status, events):
        assert _clean(text), repr(text)
    assert all(len(e.message) <= names.MESSAGE_LIMIT for e in events)
    failure = world.status.get("lastFailure")
    if failure:
        assert len(failure["message"]) <= names.MESSAGE_LIMIT
        assert _clean(str(failure.get("reason")))
    for revision in ((world.status.get("schema") or {}).get("revisions") or {}).values():
        assert isinstance(revision, str) and _clean(revision) and len(revision) <= contract.MAX_REVISION_CHARS


def _failed_expand(message: str, exit_code: int = 1) -> World:
    world = World(spec=base_spec("1"))
    world.reconcile()
    world.finish_job("expand", ok=False, exit_code=exit_code, message=message)
    world.reconcile()
    world.reconcile()
    return world


def _succeeded_expand(message: str) -> World:
    world = World(spec=base_spec("1"))
    world.reconcile()
    world.finish_job("expand", ok=True, message=message)
    world.reconcile()
    return world


def _planned(message: str) -> World:
    world = World(spec=base_spec("1", contract={"policy": "Manual"}))
    world.install("1")
    world.auto_plan = False
    world.set_spec(version="2")
    world.reconcile()
    world.finish_job("expand")
    world.reconcile()
    world.complete_rollouts()
    world.reconcile()  # creates the plan Job
    world.finish_job(names.STEP_PLAN, ok=True, message=message)
    world.reconcile()
    return world


def _check_failed(world: World) -> None:
    _assert_publishable(world)
    assert world.status["phase"] == names.PHASE_FAILED
    assert world.condition(names.COND_STALLED)["status"] == "True"
    assert world.condition(names.COND_STALLED)["reason"] == names.REASON_JOB_FAILED
    assert world.status["lastFailure"]["message"]


def _check_plan(world: World, message: str) -> None:
    _assert_publishable(world)
    summary = contract.parse_summary(message)
    sql, _ = contract.read_plan(summary)
    if "contractPlan" in world.status:  # published: only what matches its digest
        assert world.status["contractPlan"]["digest"] == summary["digest"]
        published = next(iter(world.configmaps.values()))["data"]["plan.sql"]
        assert sql is None or published == sql
    else:
        assert world.condition(names.COND_STALLED)["status"] == "True"
        assert world.condition(names.COND_STALLED)["reason"] == names.REASON_JOB_FAILED


@pytest.mark.parametrize("message", list(NASTY.values()), ids=list(NASTY))
def test_the_planner_reports_any_message_as_the_steps_failure(message: str) -> None:
    _check_failed(_failed_expand(message))
    succeeded = _succeeded_expand(message)
    _assert_publishable(succeeded)
    assert succeeded.status["rollout"]["steps"]["expand"]["phase"] == "Succeeded"  # the exit code decides
    _check_plan(_planned(message), message)


@pytest.mark.parametrize("message", [NASTY["error_is_int"], NASTY["revisions_is_int"], NASTY["to_holds_ints"]])
def test_wrong_types_are_named_in_the_failure(message: str) -> None:
    world = _failed_expand(message, exit_code=1)
    failure = world.status["lastFailure"]["message"]
    assert failure.startswith("exit code 1; the runner's summary is not valid: `")


def test_a_plan_with_a_bomb_or_forged_sql_fails_the_plan_step() -> None:
    world = _planned(NASTY["zlib_bomb"])
    assert "contractPlan" not in world.status
    assert "inflates to more than" in world.condition(names.COND_STALLED)["message"]
    forged = {**contract.plan_payload("DROP TABLE a;\n"), "digest": contract.plan_digest("SELECT 1;\n")}
    world = _planned(json.dumps(forged))
    assert "contractPlan" not in world.status and not world.configmaps
    assert "does not match" in world.condition(names.COND_STALLED)["message"]


def test_control_characters_never_reach_status_or_events() -> None:
    world = _failed_expand(NASTY["control_chars"])
    assert world.status["lastFailure"]["message"] == "red [31malert evil next"
    _assert_publishable(world)


# --- property-based: random messages ---------------------------------------------------------------------------
ANY_CHAR = st.characters(exclude_categories=())  # every code point, lone surrogates included
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(ANY_CHAR, max_size=40),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(contract.SUMMARY_KEYS) | st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
summaries = st.dictionaries(st.sampled_from(contract.SUMMARY_KEYS) | st.text(max_size=8), json_values, max_size=8).map(
    lambda d: json.dumps(d)
)
plans = st.builds(
    lambda sql, extra, forge: json.dumps(
        {**contract.plan_payload(sql), **extra, **({"digest": contract.plan_digest(sql + "x")} if forge else {})}
    ),
    st.text(ANY_CHAR.filter(lambda c: not 0xD800 <= ord(c) <= 0xDFFF), max_size=200),
    st.dictionaries(st.sampled_from(contract.SUMMARY_KEYS), json_values, max_size=2),
    st.booleans(),
)
messages = st.one_of(
    st.text(ANY_CHAR, max_size=300),
    summaries,
    plans,
    st.tuples(st.text(ANY_CHAR, max_size=80), summaries).map(lambda t: f"{t[0]}\n{t[1]}"),
    st.integers(1, 3000).map(lambda n: "[" * n),
    st.integers(1, 3000).map(lambda n: '{"error":' * n),
)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(messages)
def test_any_message_parses_to_typed_printable_bounded_values(message: str) -> None:
    summary, problems = contract.read_summary(message)
    assert set(summary) <= set(contract.SUMMARY_KEYS)
    assert set(problems) <= {*contract.SUMMARY_KEYS, contract.MESSAGE_PROBLEM}
    assert all(_clean(p) for p in problems.values())
    for key in ("command", "release", "outcome", "error", "step", "digest", "sql_z"):
        assert key not in summary or isinstance(summary[key], str)
    for key in ("applied", "revisions"):
        assert key not in summary or all(isinstance(r, str) and _clean(r) for r in summary[key])
    sql, problem = contract.read_plan(summary)
    if sql is not None:
        assert contract.plan_digest(sql) == summary["digest"] and problem is None
    original = copy.deepcopy(summary)
    contract.printable(summary.get("error"), names.MESSAGE_LIMIT)
    assert summary == original


@PROPERTY
@given(messages, st.integers(1, 255))
def test_any_message_fails_the_step_cleanly(message: str, exit_code: int) -> None:
    _check_failed(_failed_expand(message, exit_code))
    _assert_publishable(_succeeded_expand(message))


@PROPERTY
@given(messages)
def test_any_plan_message_is_published_only_when_valid(message: str) -> None:
    _check_plan(_planned(message), message)


def test_a_failed_pod_without_any_message_still_fails_the_step() -> None:
    world = _failed_expand("", exit_code=3)
    _check_failed(world)
    assert world.jobs and all(j.state == JOB_FAILED for j in world.jobs.values())
