"""Site config: resolution order, channel_mirrors, and errors that name the file and key.

A publish with a malformed site config must fail before it writes anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import msgspec.inspect
import pytest
from support.cli import CLI, run_cli

from nsls2_artifacts.config import CONFIG_ENV, load_config
from nsls2_artifacts.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


def test_relative_paths_and_mirrors_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "chan").mkdir()
    cfg = load_config(
        write(
            tmp_path,
            "store: ./s\ndeploy_root: d\nchannel_mirrors:\n  conda-forge: ./chan\n"
            "  https://conda.anaconda.org/bioconda: https://mirror.example/bioconda\n",
        )
    )
    assert cfg.store == tmp_path / "s" and cfg.deploy_root == tmp_path / "d"
    assert cfg.mirror_for("conda-forge") == (tmp_path / "chan").as_uri()
    assert cfg.mirror_for("https://conda.anaconda.org/bioconda") == (
        "https://mirror.example/bioconda"
    )
    # a channel given by URL falls back to the mirror of its name
    assert cfg.mirror_for("https://conda.anaconda.org/conda-forge/") == (tmp_path / "chan").as_uri()
    assert cfg.mirror_for("pytorch") == "pytorch"


def test_s3_store_url_and_options(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            "store: s3://bucket/some/prefix/\nstore_options:\n"
            "  endpoint_url: 'http://127.0.0.1:9000'\n  region: us-east-1\n"
            "  addressing_style: path\n",
        )
    )
    assert cfg.store == "s3://bucket/some/prefix"
    assert cfg.store_options.endpoint_url == "http://127.0.0.1:9000"
    assert cfg.store_options.addressing_style == "path"
    assert cfg.local_dir == tmp_path / "var"  # hook state and caches stay local
    assert cfg.hook_state_dir == tmp_path / "var" / "hook"


def test_environment_variable_is_the_fallback(tmp_path: Path, monkeypatch) -> None:
    path = write(tmp_path, "store: ./from-env\n")
    monkeypatch.setenv(CONFIG_ENV, str(path))
    assert load_config().store == tmp_path / "from-env"
    (tmp_path / "other").mkdir()
    explicit = write(tmp_path / "other", "store: ./explicit\n")
    assert load_config(explicit).store == tmp_path / "other" / "explicit"  # --config wins


def test_embedded_default_works_offline_under_var(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    assert cfg.source is None
    assert cfg.store == tmp_path / "var" / "store"
    assert cfg.mirror_for("conda-forge") == (tmp_path / "var" / "channel").as_uri()
    assert cfg.retention.keep_latest == 3 and cfg.hook.nightly is None
    assert cfg.kernels.memory_limit == 16 * 1024**3 and cfg.agent.poll_seconds == 30


def test_defaults_are_written_once() -> None:
    """Every default is in the schema (SiteFile's Structs): the embedded default file holds
    only what differs from it, and SiteConfig (the resolved view) declares none."""
    import dataclasses
    from importlib import resources

    import yaml

    from nsls2_artifacts.config import SiteConfig, SiteFile

    text = resources.files("nsls2_artifacts").joinpath("default-site.yaml").read_text()
    defaults = msgspec.to_builtins(SiteFile())
    for key, value in yaml.safe_load(text).items():
        if isinstance(value, dict) and defaults[key]:  # a section: compare its keys
            for name, item in value.items():
                assert item != defaults[key][name], f"{key}.{name} repeats the schema's default"
        else:
            assert value != defaults[key], f"{key} repeats the schema's default"
    for field in dataclasses.fields(SiteConfig):
        assert field.default is dataclasses.MISSING, field.name
        assert field.default_factory is dataclasses.MISSING, field.name


BAD = [
    ("store: [unclosed\n", None, "invalid YAML"),
    ("- just a list\n", None, "mapping"),
    ("stores: ./s\n", "stores", "unknown key"),
    ("store: 3\n", "store", "path"),
    ("channel_mirrors: [conda-forge]\n", "channel_mirrors", "mapping"),
    ("channel_mirrors: {conda-forge: ''}\n", "channel_mirrors.conda-forge", "URL"),
    ("retention: {keep_latest: three}\n", "retention.keep_latest", "expected int"),
    ("retention: {keep_latest: -1}\n", "retention.keep_latest", "negative"),
    ("retention: {keep: 1}\n", "retention.keep", "unknown key"),
    ("hook: {listen: nowhere}\n", "hook.listen", "HOST:PORT"),
    ("store: ftp://host/x\n", "store", "s3://BUCKET/PREFIX"),
    ("store: s3:///prefix\n", "store", "no bucket"),
    ("store_options: {addressing_style: sideways}\n", "store_options.addressing_style", "path"),
    ("store_options: {aws_secret_access_key: x}\n", "store_options.aws_secret_access_key", "AWS_"),
    ("store_options: {endpoint: x}\n", "store_options.endpoint", "unknown key"),
    ("agent: {node: ../x}\n", "agent.node", "node name '../x'"),
    ("agent: {node: 'a b'}\n", "agent.node", "letters, digits"),
    ("agent: {node_imports: [1]}\n", "agent.node_imports[0]", "expected str, got int"),
    ("agent: {node_imports: cupy}\n", "agent.node_imports", "expected list, got str"),
    ("agent: {prune: maybe}\n", "agent.prune", "expected bool, got str"),
    ("beamlines: {../etc: {uri: 'http://x'}}\n", "beamlines.../etc", "beamline name '../etc'"),
    # the schema (msgspec Structs) names the field path, inside lists and entries too
    ("beamlines: {csx: {path: [raw]}}\n", "beamlines.csx.uri", "expected a URI string"),
    ("beamlines: {csx: {uri: u, paths: [raw]}}\n", "beamlines.csx.paths", "known: env, path, uri"),
    ("beamlines: {csx: {uri: u, env: ../base}}\n", "beamlines.csx.env", "environment name"),
    ("hook: {tokens_sha256: [abc]}\n", "hook.tokens_sha256[0]", "a sha256 hex digest"),
    ("hook: {tokens_sha256: abc}\n", "hook.tokens_sha256", "a list of sha256 hex digests"),
    ("hook: {tokens_sha256: [{name: x, sha256: zz}]}\n", "hook.tokens_sha256[0].sha256", "'zz'"),
    (
        "hook: {tokens_sha256: [{name: ' ', sha256: " + "a" * 64 + "}]}\n",
        "hook.tokens_sha256[0].name",
        "expected a name",
    ),
    (
        "hook: {tokens_sha256: [{sha256: " + "a" * 64 + ", who: x}]}\n",
        "hook.tokens_sha256[0].who",
        "known: name, sha256",
    ),
    ("hook: {nightly: 5}\n", "hook.nightly", "time of day"),
    ("hook: {concurrency: 0}\n", "hook.concurrency", "at least 1 and up to 64, got 0"),
    ("hook: {state_dir: 3}\n", "hook.state_dir", "expected a path, got 3"),
    ("hook: {build_user: ''}\n", "hook.build_user", "expected a user name, got ''"),
    ("hook: {listen: '127.0.0.1:1', lissen: x}\n", "hook.lissen", "unknown key (known: "),
    ("agent: {poll_seconds: 0}\n", "agent.poll_seconds", "more than 0 and up to 86400, got 0"),
    ("store_options: {timeout_seconds: .inf}\n", "store_options.timeout_seconds", "finite"),
    # a mapping's wrong value is named by its key (msgspec says only `[...]`)
    ("hook: {webhook_repos: {a/b: [x], o/r: 3}}\n", "hook.webhook_repos.o/r", "list of env names"),
    ("hook: {webhook_repos: {o/r: [x, 3]}}\n", "hook.webhook_repos.o/r[1]", "an env name, got 3"),
    ("hook: {webhook_repos: {o/r: [x, ../y]}}\n", "hook.webhook_repos.o/r[1]", "environment name"),
    ("hook: {webhook_repos: {1: [x]}}\n", "hook.webhook_repos", "as keys, got 1"),
    ("beamlines: {1: {uri: u}}\n", "beamlines", "as keys, got 1"),
    ("channel_mirrors: {2: u}\n", "channel_mirrors", "as keys, got 2"),
]


@pytest.mark.parametrize(("text", "key", "message"), BAD)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, key: str | None, message: str):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path)
    assert info.value.field == key
    assert message in str(info.value)


def test_empty_sections_mean_the_defaults_and_tokens_keep_their_names(tmp_path: Path) -> None:
    """`hook:` with nothing under it is YAML's null: the section's defaults, as before."""
    cfg = load_config(write(tmp_path, "hook:\nretention:\nagent: {node: n1}\nbeamlines:\n"))
    assert cfg.hook.listen == "127.0.0.1:8707" and cfg.retention.keep_latest == 3
    upper, named = "A" * 64, "b" * 64
    text = (
        f"hook: {{tokens_sha256: [{upper}, {{name: ' Ann ', sha256: {named}}}], state_dir: st}}\n"
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.hook.tokens_sha256 == ("a" * 64, named)
    assert cfg.hook.token_names == {named: "Ann"}
    assert cfg.hook_state_dir == tmp_path / "st"  # relative to the config file


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("via_env", [False, True])
def test_publish_with_bad_config_fails_before_writing(tmp_path: Path, via_env: bool) -> None:
    import subprocess

    path = write(
        tmp_path,
        f"manifests: {REPO / 'manifests'}\nstore: ./store\ndeploy_root: ./deploy\n"
        "retention: {grace_days: soon}\n",
    )
    if via_env:
        environ = {**os.environ, CONFIG_ENV: str(path)}
        result = subprocess.run(
            [*CLI, "publish", "demo"], capture_output=True, text=True, env=environ, check=False
        )
    else:
        result = run_cli(path, "publish", "demo", check=False)
    assert result.returncode == 1
    assert str(path) in result.stderr and "retention.grace_days" in result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.yaml"]  # no store, no cache


def test_numeric_fields_accept_decimals_and_reject_wrong_types(tmp_path) -> None:
    from nsls2_artifacts.config import load_config
    from nsls2_artifacts.errors import ConfigError

    path = tmp_path / "site.yaml"
    path.write_text("agent: {poll_seconds: 2.5, node: n1}\nretention: {grace_days: 0.5}\n")
    site = load_config(path)
    assert site.agent.poll_seconds == 2.5
    assert site.retention.grace_days == 0.5
    path.write_text("retention: {keep_latest: 2.5}\n")
    with pytest.raises(ConfigError, match="retention.keep_latest"):
        load_config(path)
    path.write_text("agent: {prune: 1}\n")
    with pytest.raises(ConfigError, match="agent.prune"):
        load_config(path)


def test_kernels_section_sizes_and_errors(tmp_path: Path) -> None:
    from nsls2_artifacts.config import parse_size

    cfg = load_config(write(tmp_path, "kernels: {memory_limit: 16GiB, listed_lts: 3}\n"))
    assert (cfg.kernels.memory_limit, cfg.kernels.listed_lts) == (16 * 1024**3, 3)
    assert (
        load_config(write(tmp_path, "kernels: {memory_limit: null}\n")).kernels.memory_limit is None
    )
    assert parse_size("512MiB") == 512 * 1024**2 == parse_size("512M")
    assert parse_size("2GB") == 2 * 10**9 and parse_size(4 * 1024**3) == 4 * 1024**3
    for text, key, message in [
        ("kernels: {memory_limit: lots}\n", "kernels.memory_limit", "16GiB"),
        ("kernels: {memory_limit: 1KiB}\n", "kernels.memory_limit", "below 512MiB"),
        # issue #17 item 7: accepted before, and the kernel never started
        ("kernels: {memory_limit: 200MB}\n", "kernels.memory_limit", "below 512MiB"),
        ("kernels: {memory_limit: 64MiB}\n", "kernels.memory_limit", "below 512MiB"),
        ("kernels: {memory_limit: .nan}\n", "kernels.memory_limit", "16GiB"),
        ("kernels: {listed_lts: -1}\n", "kernels.listed_lts", "whole number"),
        ("kernels: {listed_lts: true}\n", "kernels.listed_lts", "whole number"),
        ("kernels: {memory: 1}\n", "kernels.memory", "unknown key"),
        ("kernels: [1]\n", "kernels", "mapping"),
    ]:
        with pytest.raises(ConfigError) as info:
            path = write(tmp_path, text)
            load_config(path)
        assert info.value.field == key and message in str(info.value), text
        assert info.value.path == str(path) and str(path) in str(info.value)
        assert str(tmp_path / "site.yaml") in str(info.value)


def _numeric_fields() -> dict[str, msgspec.inspect.IntType | msgspec.inspect.FloatType]:
    """Every int/float field of the site config's sections, as `section.field` -> its type."""
    from nsls2_artifacts.config import SiteFile

    found = {}
    for section in msgspec.inspect.type_info(SiteFile).fields:
        if isinstance(section.type, msgspec.inspect.StructType):
            for f in section.type.fields:
                if isinstance(f.type, msgspec.inspect.IntType | msgspec.inspect.FloatType):
                    found[f"{section.encode_name}.{f.encode_name}"] = f.type
    return found


def test_every_numeric_field_has_a_range() -> None:
    """A numeric field added later without bounds would accept NaN and 1e308 again."""
    fields = _numeric_fields()
    assert len(fields) >= 17  # the seventeen of today, and any added later
    for key, info in fields.items():
        assert info.le is not None and (info.ge is not None or info.gt is not None), key


def _hostile_numbers(key: str) -> list[str]:
    info = _numeric_fields()[key]
    values = [".nan", ".inf", "-.inf", "-1", "1.0e+308", str(int(info.le) * 10 + 1)]
    if info.gt is not None:
        values.append("0")
    return values


@pytest.mark.parametrize(
    ("key", "value"), [(k, v) for k in _numeric_fields() for v in _hostile_numbers(k)]
)
def test_nan_infinity_and_out_of_range_numbers_name_file_and_field(
    tmp_path: Path, key: str, value: str
) -> None:
    """`node_ttl_seconds: .nan` would make no node ever stale, `grace_days: .nan` skip the
    grace period: every numeric field refuses NaN, infinities and values out of range."""
    section, name = key.split(".")
    path = write(tmp_path, f"{section}:\n  {name}: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path) and info.value.field == key


@pytest.mark.parametrize(
    "value", ["99999999999999999999999999999999999999999999999999" * 8 + "GiB", "2048PiB", 2**61]
)
def test_memory_limit_beyond_any_machine_is_refused(tmp_path: Path, value) -> None:
    path = write(tmp_path, f"kernels: {{memory_limit: {value}}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == "kernels.memory_limit"


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:٣٣"])
def test_listen_port_out_of_range_is_refused(tmp_path: Path, listen: str) -> None:
    path = write(tmp_path, f"hook: {{listen: '{listen}'}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == "hook.listen"
