"""An approval binds what runs (issue 14, item 4): the contract step's arguments carry the approved digest, and
divbase-migrate's own parser takes them. Against PostgreSQL: tests/integration/test_expect_digest.py."""

from __future__ import annotations

import pytest
from divbase_migrations import cli, contract

DIGEST = contract.plan_digest('ALTER TABLE "user" DROP COLUMN name;\n')


def test_contract_args_carry_the_digest_and_the_runner_parses_them() -> None:
    args = contract.step_args("contract", "2", 5, None, expect_digest=DIGEST)
    assert args == ["contract", "--release", "2", "--lock-timeout", "5s", contract.ARG_EXPECT_DIGEST, DIGEST]
    parsed = cli.parser().parse_args(args)
    assert parsed.expect_digest == DIGEST and parsed.release == "2"
    assert cli.parser().parse_args(["contract", "--release", "2"]).expect_digest is None


@pytest.mark.parametrize(("step", "digest"), [("expand", DIGEST), ("plan", DIGEST), ("contract", "sha256:abc"),
                                              ("contract", DIGEST.upper()), ("contract", "md5:" + "0" * 64)])
def test_a_digest_only_binds_a_contract_and_only_a_sha256(step: str, digest: str) -> None:
    with pytest.raises(ValueError):
        contract.step_args(step, "2", expect_digest=digest)


def test_the_runner_refuses_a_malformed_digest_as_bad_input() -> None:
    with pytest.raises(SystemExit) as info:
        cli.parser().parse_args(["contract", "--release", "2", contract.ARG_EXPECT_DIGEST, "sha256:abc"])
    assert info.value.code == contract.EXIT_USAGE
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["expand", "--release", "2", contract.ARG_EXPECT_DIGEST, DIGEST])
