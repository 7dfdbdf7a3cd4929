"""Kernel names never collide: `nsls2-ENV-latest` and `nsls2-ENV-LABEL` name one kernel each.

`promote demo OLD --lts latest` used to turn the rolling kernel into an LTS kernel pinned to
an old build; env `a` with label `b-latest` and env `a-b` shared a name; `Beta` and `beta`
were one kernel. The rules (names.py) are checked at promote, in the hook and by the agent,
which reports a clash instead of overwriting.
"""

from __future__ import annotations

import io
import json
import logging
import random
import string
from pathlib import Path

import msgspec
import pytest
from support.agent import commit_fake, promote_fake, write_site
from support.cli import run_cli

from nsls2_artifacts import layout, names
from nsls2_artifacts.agent import kernels
from nsls2_artifacts.agent.log import setup_logging
from nsls2_artifacts.agent.reconcile import run_pass
from nsls2_artifacts.store import FilesystemStore


def _random_name(rng: random.Random, alphabet: str, first: str) -> str:
    return rng.choice(first) + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))


def test_kernel_name_is_injective_and_invertible() -> None:
    """Many (env, label) pairs built from the characters that matter ('-', '.', '_',
    'latest' pieces): distinct pairs never share a name, and every name parses back."""
    rng = random.Random(11)
    pieces = string.ascii_lowercase[:4] + string.digits[:3] + "-._"
    seen: dict[str, tuple[str, str | None]] = {}
    for _ in range(20_000):
        env = _random_name(rng, string.ascii_lowercase[:3] + "_1", "ab1")
        label = rng.choice([None, "latest", "b-latest", _random_name(rng, pieces, "ab12")])
        try:
            name = names.kernel_name(env, label)
        except names.KernelNameError:
            assert label == "latest" or names.label_problem(label or "x")
            continue
        assert names.parse_kernel_name(name) == (env, label)
        assert seen.setdefault(name, (env, label)) == (env, label), name
    assert len(seen) > 1000


@pytest.mark.parametrize(
    ("env", "label", "why"),
    [
        ("demo", "latest", "reserved"),  # the rolling kernel's own name
        ("demo", "Beta", "lowercase"),  # Jupyter lowercases: Beta and beta would be one kernel
        ("a-b", None, "no '-'"),  # would be nsls2-a-b-latest, the name of a's LTS b-latest
        ("demo", "-x", "lowercase"),
        ("demo", "2026/1", "lowercase"),
        ("Demo", None, "no '-'"),
        # `$` matches before a trailing newline: the rules match the whole name (\Z)
        ("demo\n", None, "no '-'"),
        ("demo", "2026-1\n", "lowercase"),
    ],
)
def test_names_breaking_the_rules_are_refused(env: str, label: str | None, why: str) -> None:
    with pytest.raises(names.KernelNameError, match=why):
        names.kernel_name(env, label)


def test_promote_refuses_reserved_and_ambiguous_labels(tmp_path: Path) -> None:
    config, cfg = write_site(tmp_path / "site")
    build = commit_fake(cfg, tag="one", hours=1)
    for label, why in (("latest", "reserved"), ("Beta", "lowercase"), ("LATEST", "lowercase")):
        result = run_cli(config, "promote", "demo", build.build_id, "--lts", label, check=False)
        assert result.returncode != 0 and why in result.stderr, result.stderr
    assert not (cfg.store / "demo" / "lts").exists()  # nothing written
    ok = run_cli(config, "promote", "demo", build.build_id, "--lts", "2026-1", check=False)
    assert ok.returncode == 0, ok.stderr


def _legacy_latest_spec(cfg, env: str, build_id: str) -> Path:
    """A rolling-kernel spec as an agent under the old rules wrote it for env `env`."""
    name = f"nsls2-{env}-latest"
    path = layout.kernels_dir(cfg.deploy_root) / name / "kernel.json"
    path.parent.mkdir(parents=True)
    spec = {
        "argv": ["/bin/false", "{connection_file}"],
        "display_name": f"{env} (latest)",
        "language": "python",
        "metadata": {
            "nsls2": {"env": env, "build_id": build_id, "channel": "latest", "label": "latest"}
        },
    }
    path.write_text(json.dumps(spec))
    return path


def test_agent_reports_clashes_instead_of_overwriting(tmp_path: Path) -> None:
    """LTS records written to the store behind promote's back (an older version, by hand):
    the agent writes every kernel it can name safely and refuses the rest, saying why."""
    config, cfg = write_site(tmp_path / "site")
    old = commit_fake(cfg, tag="one", hours=1)
    new = commit_fake(cfg, tag="two", hours=2)
    promote_fake(cfg, "demo", "latest", old.build_id, 3)  # would hijack the rolling kernel
    promote_fake(cfg, "demo", "Beta", old.build_id, 3)
    promote_fake(cfg, "demo", "beta", new.build_id, 4)
    other = commit_fake(cfg, env="a", tag="three", hours=1)
    promote_fake(cfg, "a", "b-latest", other.build_id, 2)
    dashed = commit_fake(cfg, env="a-b", tag="four", hours=1)  # env from before the rule
    legacy = _legacy_latest_spec(cfg, "a-b", dashed.build_id)
    before = legacy.read_text()

    result = run_pass(cfg, FilesystemStore(cfg.store), setup_logging(logging.INFO, io.StringIO()))

    specs = kernels.installed(cfg.deploy_root)
    rolling = kernels.spec_target(specs["nsls2-demo-latest"])
    assert (rolling["channel"], rolling["build_id"]) == ("latest", new.build_id)
    assert kernels.spec_target(specs["nsls2-demo-beta"])["build_id"] == new.build_id
    assert kernels.spec_target(specs["nsls2-a-latest"])["env"] == "a"
    assert legacy.read_text() == before  # the old kernel of a-b: neither overwritten nor removed
    assert sorted(specs) == ["nsls2-a-b-latest", "nsls2-a-latest", "nsls2-demo-beta",
                             "nsls2-demo-latest"]  # fmt: skip
    failures = "\n".join(result.failures)
    assert "kernel for demo LTS 'latest'" in failures and "reserved" in failures
    assert "kernel for demo LTS 'Beta'" in failures
    assert "kernel for a-b latest" in failures
    assert "nsls2-a-b-latest is already the kernel of a-b latest; not overwritten" in failures
    status = run_cli(config, "status", check=False)
    assert "KERNELS NOT WRITTEN" in status.stdout, status.stdout + status.stderr
    assert "kernel for a LTS 'b-latest': nsls2-a-b-latest is already" in status.stdout
    # the operator retires the old env's kernel: the next pass gives the name to a's LTS
    kernels.remove_kernelspec(cfg.deploy_root, "nsls2-a-b-latest")
    run_pass(cfg, FilesystemStore(cfg.store), setup_logging(logging.INFO, io.StringIO()))
    taken = kernels.spec_target(kernels.installed(cfg.deploy_root)["nsls2-a-b-latest"])
    assert (taken["env"], taken["label"]) == ("a", "b-latest")


def test_no_rule_takes_a_trailing_newline() -> None:
    """`re.match("^...$")` accepts "name\\n": a node, beamline or build id with a newline
    would name a different file than the one every other reader looks for."""
    from nsls2_artifacts.config import HookSettings
    from nsls2_artifacts.records import build_id_time, is_build_id

    assert names.node_name_problem("n1\n") and names.beamline_name_problem("csx\n")
    assert names.env_name_problem("demo\n") and names.label_problem("2026-1\n")
    build = "2026.11.25T020000Z-1a2b3c4d"
    assert is_build_id(build) and not is_build_id(build + "\n")
    assert build_id_time(build + "\n") is None
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"tokens_sha256": ["a" * 64 + "\n"]}, HookSettings)
