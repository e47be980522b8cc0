"""What prunekit reads from files others made: a model.pt chooses no code, a reuse is checked
against what produced it. The fault table in docs/faults.md lists each case and its test."""
from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.artifacts import MODEL_FORMAT
from prunekit.errors import ConfigError


def crafted_model_pt(path, marker):
    """A model.pt whose model section names `os:system` with a harmless command (it would
    create `marker`)."""
    torch.save({"format": MODEL_FORMAT, "num_classes": 10, "image_size": 8, "compacted": False,
                "model": {"name": "custom", "in_channels": 1, "target": "os:system",
                          "kwargs": {"command": f"touch {marker}"}},
                "state_dict": {}}, path)
    return path


@pytest.mark.parametrize("load", [
    lambda p: prunekit.load_pruned(p),
    lambda p: prunekit.export_onnx(p, p.with_suffix(".onnx")),
], ids=["load_pruned", "export_onnx"])
def test_a_model_pt_naming_code_runs_nothing(tmp_path, load):
    marker = tmp_path / "ran"
    path = crafted_model_pt(tmp_path / "model.pt", marker)
    with pytest.raises(ConfigError, match=r"names code to import and run \(os:system\).*"
                                          r"load_pruned\(path, model=") as e:
        load(path)
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_a_model_pt_naming_an_unknown_builder_is_one_line(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"format": MODEL_FORMAT, "num_classes": 10, "image_size": 8, "compacted": False,
                "model": {"name": "os.system", "in_channels": 1}, "state_dict": {}}, path)
    with pytest.raises(ConfigError, match="is not a known model"):
        prunekit.load_pruned(path)
