"""`sluice local kubeconfig --merge` on files: what is kept, replaced, refreshed and refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from sluice.local.commands.kubeconfig import (
    CONTEXT,
    KubeconfigError,
    merge,
    refresh_if_merged,
    unmerge,
    user_kubeconfig,
)
from sluice.local.kubeapi.kubeconfig import CONTEXT as SERVER_CONTEXT
from sluice.local.kubeapi.kubeconfig import write_kubeconfig


def _instance(tmp_path: Path, server: str, token: str) -> Path:
    return write_kubeconfig(tmp_path / "instance" / "kubeconfig", server, token)


def test_context_name_matches_the_written_kubeconfig() -> None:
    assert CONTEXT == SERVER_CONTEXT == "sluice-local"


def test_user_kubeconfig_is_kubeconfig_first_entry_else_home() -> None:
    assert user_kubeconfig({"KUBECONFIG": f"/a/one{os.pathsep}/b/two"}) == Path("/a/one")
    assert user_kubeconfig({"KUBECONFIG": ""}) == Path.home() / ".kube" / "config"
    assert user_kubeconfig({}) == Path.home() / ".kube" / "config"


def test_merge_into_a_missing_file_then_refresh_then_unmerge(tmp_path: Path) -> None:
    target = tmp_path / "kube" / "config"
    source = _instance(tmp_path, "https://127.0.0.1:1111", "t1")
    assert "merged context 'sluice-local'" in merge(source, target)
    assert not (target.parent / "config.sluice-backup").exists()  # nothing to back up
    data = yaml.safe_load(target.read_text())
    assert data["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:1111"
    assert "current-context" not in data

    # A new start (new port and token): refreshed in place, still one entry of each.
    source = _instance(tmp_path, "https://127.0.0.1:2222", "t2")
    assert refresh_if_merged(source, target)
    data = yaml.safe_load(target.read_text())
    assert [c["cluster"]["server"] for c in data["clusters"]] == ["https://127.0.0.1:2222"]
    assert [u["user"]["token"] for u in data["users"]] == ["t2"]

    unmerge(target)
    assert yaml.safe_load(target.read_text())["contexts"] == []
    # Not merged: a later `up` leaves the file alone.
    before = target.read_text()
    assert not refresh_if_merged(source, target)
    assert target.read_text() == before


def test_unmerge_clears_current_context_only_if_ours(tmp_path: Path) -> None:
    target = tmp_path / "config"
    merge(_instance(tmp_path, "https://127.0.0.1:1", "t"), target)
    data = yaml.safe_load(target.read_text())
    data["current-context"] = CONTEXT
    target.write_text(yaml.safe_dump(data))
    unmerge(target)
    assert yaml.safe_load(target.read_text())["current-context"] == ""


def test_a_broken_kubeconfig_is_never_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "config"
    target.write_text("clusters: [unclosed\n")
    with pytest.raises(KubeconfigError, match="not valid YAML"):
        merge(_instance(tmp_path, "https://127.0.0.1:1", "t"), target)
    assert target.read_text() == "clusters: [unclosed\n"
    target.write_text("- a list\n")
    with pytest.raises(KubeconfigError, match="not a kubeconfig"):
        merge(_instance(tmp_path, "https://127.0.0.1:1", "t"), target)
    assert not refresh_if_merged(_instance(tmp_path, "https://127.0.0.1:1", "t"), target)
