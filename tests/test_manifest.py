"""Manifests: the shipped ones load; every malformed field is named with its file.

The CLI-level tests check the other half of the promise: a bad manifest writes nothing
to the store.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nsls2_artifacts.config import RetentionPolicy
from nsls2_artifacts.errors import ManifestError
from nsls2_artifacts.manifest import list_manifests, load_manifest

REPO = Path(__file__).resolve().parents[1]

GOOD_TOML = """
[workspace]
name = "t"
channels = ["conda-forge"]
platforms = ["linux-64"]

[dependencies]
python = "3.11.*"
numpy = ">=1.26, <3"
six = "1.16.0"
ipykernel = {version = ">=6", build = "pypi*"}

[pypi-dependencies]
iniconfig = ">=2"
rich = {version = "*", extras = ["jupyter"]}
"""


def env_dir(root: Path, toml: str = GOOD_TOML, yaml: str | None = "display_name: T\n") -> Path:
    env = root / "t"
    env.mkdir(parents=True, exist_ok=True)
    (env / "pixi.toml").write_text(toml)
    if yaml is not None:
        (env / "nsls2.yaml").write_text(yaml)
    return root


def test_shipped_manifests_load() -> None:
    assert {"base", "demo"} <= set(list_manifests(REPO / "manifests"))
    demo = load_manifest(REPO / "manifests", "demo")
    assert demo.channels == ("conda-forge",)
    assert demo.platforms == ("linux-64",)
    assert demo.dependencies == {
        "python": "python 3.11.*",
        "ipykernel": "ipykernel",
        "databroker": "databroker",
    }
    assert demo.display_name == "NSLS-II demo"
    assert demo.smoke == ("ipykernel", "databroker")
    assert demo.nightly is True
    base = load_manifest(REPO / "manifests", "base")
    for name in ("python", "ipykernel", "databroker", "bluesky", "ophyd", "numpy", "scipy"):
        assert name in base.dependencies
    for module in ("databroker", "bluesky", "ophyd", "numpy", "matplotlib", "skimage"):
        assert module in base.smoke
    assert len(base.source_sha256) == 64


def test_specs_follow_pixi_semantics(tmp_path: Path) -> None:
    m = load_manifest(env_dir(tmp_path), "t")
    assert m.dependencies["numpy"] == "numpy >=1.26,<3"
    assert m.dependencies["six"] == "six ==1.16.0"  # a bare version is exact in pixi
    assert m.dependencies["ipykernel"] == "ipykernel >=6 pypi*"
    assert m.pypi_dependencies == {"iniconfig": "iniconfig>=2", "rich": "rich[jupyter]"}
    assert m.display_name == "T"
    assert m.smoke == ("ipykernel",)  # the default


def test_source_hash_names_both_files(tmp_path: Path) -> None:
    root = env_dir(tmp_path)
    first = load_manifest(root, "t").source_sha256
    (root / "t" / "nsls2.yaml").write_text("display_name: Other\n")
    assert load_manifest(root, "t").source_sha256 != first


def test_retention_overrides_apply_over_the_site_policy(tmp_path: Path) -> None:
    root = env_dir(tmp_path, yaml="retention: {keep_latest: 5}\nnightly: false\n")
    m = load_manifest(root, "t")
    policy = m.retention_policy(RetentionPolicy(lts_years=3, keep_latest=3, grace_days=7))
    assert (policy.keep_latest, policy.grace_days) == (5, 7)
    assert m.nightly is False


BAD_TOML = [
    ("[workspace\nname = 1", "pixi.toml", "invalid TOML"),
    ("[dependencies]\npython = '3.11'\n", "pixi.toml: workspace", "[workspace]"),
    (GOOD_TOML.replace('channels = ["conda-forge"]', "channels = []"), "workspace.channels", ""),
    (
        GOOD_TOML.replace('channels = ["conda-forge"]', "channels = [3]"),
        "workspace.channels[0]",
        "",
    ),
    (GOOD_TOML.replace('["linux-64"]', '["linux-65"]'), "workspace.platforms[0]", "linux-65"),
    (GOOD_TOML.replace('python = "3.11.*"', "python = 3.11"), "dependencies.python", ""),
    (GOOD_TOML.replace('python = "3.11.*"', 'Python = "3.11.*"'), "dependencies.Python", ""),
    (GOOD_TOML.replace('build = "pypi*"', 'bild = "x"'), "dependencies.ipykernel.bild", ""),
    (
        GOOD_TOML.replace('iniconfig = ">=2"', 'iniconfig = "=>2"'),
        "pypi-dependencies.iniconfig",
        "",
    ),
    (GOOD_TOML.replace('extras = ["jupyter"]', 'extras = "jupyter"'), "rich.extras", ""),
    (GOOD_TOML + "\n[system-requirements]\nlibc = []\n", "system-requirements.libc", ""),
]


@pytest.mark.parametrize(("toml", "field", "text"), BAD_TOML)
def test_bad_pixi_toml_names_file_and_field(
    tmp_path: Path, toml: str, field: str, text: str
) -> None:
    root = env_dir(tmp_path, toml=toml)
    with pytest.raises(ManifestError) as info:
        load_manifest(root, "t")
    message = str(info.value)
    assert str(root / "t" / "pixi.toml") in message
    assert field in message
    assert text in message


BAD_YAML = [
    ("display_name: [unclosed\n", None, "invalid YAML"),
    ("- a list\n", None, "mapping"),
    ("display_nam: X\n", "display_nam", "unknown key"),
    ("display_name: ''\n", "display_name", "non-empty"),
    ("smoke: databroker\n", "smoke", "list"),
    ("smoke: [databroker, 'not a module']\n", "smoke[1]", "not an importable"),
    ("retention: {keep_latest: -1}\n", "retention.keep_latest", "non-negative"),
    ("retention: {keep_latest: 1.5}\n", "retention.keep_latest", "whole number"),
    ("retention: {keep: 1}\n", "retention.keep", "unknown key"),
    ("retention: {grace_days: .nan}\n", "retention.grace_days", "finite"),
    ("retention: {lts_years: .inf}\n", "retention.lts_years", "finite"),
    ("retention: {keep_latest: .nan}\n", "retention.keep_latest", "whole number"),
    ("retention: {grace_days: 1.0e+308}\n", "retention.grace_days", "up to"),
    ("kernels: {memory_limit: 9999999999999999999999999EiB}\n", "kernels.memory_limit", "16GiB"),
    ("kernels: {memory_limit: 99999999999999999999999999999GiB}\n", "kernels.memory_limit", "1EiB"),
    ("nightly: sometimes\n", "nightly", "true or false"),
    ("beamlines: csx\n", "beamlines", "list of beamline names"),
    ("beamlines: [csx, 'a b']\n", "beamlines[1]", "not a beamline name"),
    ("logo: missing.svg\n", "logo", "no such file"),
    ("kernels: {memory_limit: lots}\n", "kernels.memory_limit", "16GiB"),
    ("kernels: {memory: 1GiB}\n", "kernels.memory", "unknown key"),
    ("kernels: {memory_limit: 200MB}\n", "kernels.memory_limit", "below 512MiB"),
    # nsls2.yaml is a Struct (manifest.Nsls2File) decoded like the site config
    ("smoke: [databroker, 3]\n", "smoke[1]", "not an importable module name, got 3"),
    ("smoke: ['databroker\\n']\n", "smoke[0]", "not an importable module name"),
    ("description: [a]\n", "description", "expected a string"),
    ("logo: 3\n", "logo", "SVG or PNG"),
    ("kernels: 3\n", "kernels", "expected a mapping"),
]


@pytest.mark.parametrize(("yaml", "field", "text"), BAD_YAML)
def test_bad_nsls2_yaml_names_file_and_field(
    tmp_path: Path, yaml: str, field: str | None, text: str
) -> None:
    root = env_dir(tmp_path, yaml=yaml)
    with pytest.raises(ManifestError) as info:
        load_manifest(root, "t")
    assert info.value.path == str(root / "t" / "nsls2.yaml")
    assert info.value.field == field
    assert text in str(info.value)


def test_unknown_env_lists_the_known_ones(tmp_path: Path) -> None:
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "manifests", "nope")
    assert "base" in str(info.value) and "demo" in str(info.value)
    with pytest.raises(ManifestError, match="lowercase"):
        load_manifest(tmp_path / "manifests", "../demo")


def test_nsls2_yaml_is_optional(tmp_path: Path) -> None:
    m = load_manifest(env_dir(tmp_path, yaml=None), "t")
    assert m.display_name == "NSLS-II t"
    assert (m.smoke, m.nightly, m.beamlines, m.memory_limit_set) == (
        ("ipykernel",),
        True,
        (),
        False,
    )


def test_an_empty_nsls2_key_means_its_default(tmp_path: Path) -> None:
    """As in the site config, `key:` with nothing under it (null) is the default."""
    yaml = "display_name:\nsmoke:\nbeamlines:\nnightly:\nkernels:\nretention:\n"
    m = load_manifest(env_dir(tmp_path, yaml=yaml), "t")
    assert (m.display_name, m.smoke, m.beamlines) == ("NSLS-II t", ("ipykernel",), ())
    assert m.nightly and not m.memory_limit_set and m.retention == {}


def test_kernel_fields_travel_in_the_build_manifest(tmp_path: Path) -> None:
    from nsls2_artifacts.publish import kernel_extras
    from nsls2_artifacts.records import BuildManifest

    sample = {
        "schema": 1,
        "name": "t",
        "build_id": "2026.01.01T000000Z-00000000",
        "created": "2026-01-01T00:00:00Z",
        "platform": "linux-64",
        "display_name": "T",
        "smoke": [],
        "artifact": {"file": "env.tar.zst", "sha256": "0" * 64, "size": 1, "format": "tar.zst"},
        "lock": {"file": "pixi.lock", "sha256": "0" * 64},
        "packages": [],
        "builder": {},
        "source": {},
    }
    yaml = "beamlines: [csx, hxn]\nlogo: logo.svg\nkernels: {memory_limit: 8GiB}\n"
    root = env_dir(tmp_path, yaml=yaml)
    (root / "t" / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    m = load_manifest(root, "t")
    assert m.beamlines == ("csx", "hxn") and m.memory_limit == 8 * 1024**3
    extras = kernel_extras(m)
    assert extras.logo_format == "svg" and extras.memory_limit_set
    data = {"kernel": extras.to_dict()}
    assert data["kernel"]["memory_limit"] == 8 * 1024**3
    back = BuildManifest.from_dict({**sample, **data})
    assert back.kernel == extras
    assert BuildManifest.from_dict(sample).kernel.logo_format == ""  # older builds
    none = load_manifest(env_dir(tmp_path / "b", yaml="kernels: {memory_limit: null}\n"), "t")
    assert (none.memory_limit, none.memory_limit_set) == (None, True)
    (root / "t" / "logo.svg").write_bytes(b"GIF89a not an image we take")
    with pytest.raises(ManifestError, match="SVG or a PNG"):
        load_manifest(root, "t")
