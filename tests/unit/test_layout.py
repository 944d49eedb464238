"""The repository layout contract: import names that do not shadow the standard library."""
import platform
import subprocess
import sys


def test_stdlib_platform_still_works_after_importing_seqlab():
    import seqlab  # noqa: F401
    import seqlab_plugins  # noqa: F401

    assert platform.system()  # a package named `platform` would shadow this module
    assert platform.__file__.startswith(sys.base_prefix) or "site-packages" not in platform.__file__


def test_source_folders_are_not_packages(repo_root):
    assert not (repo_root / "platform" / "__init__.py").exists()
    assert not (repo_root / "plugins" / "__init__.py").exists()


def test_python_m_seqlab_help_from_repository_root(repo_root):
    result = subprocess.run([sys.executable, "-m", "seqlab", "--help"], cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for command in ("train", "plugins", "tokenizer", "data"):
        assert command in result.stdout


def test_core_imports_no_builtin_plugin_by_name(repo_root):
    offenders = [p for p in (repo_root / "platform" / "seqlab").rglob("*.py") if "seqlab_plugins" in p.read_text()]
    assert offenders == []
