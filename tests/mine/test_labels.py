"""Weak labels: selection files and strings, their validation, the threshold rule, the written training set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from deepict_dask.errors import ConfigError, InputError, OutputError
from deepict_dask.mine.labels import (
    parse_selection,
    parse_selection_text,
    read_selection,
    weak_masks,
    write_weak_labels,
)
from deepict_dask.train.patch_stack import open_stack_array

from ..train.stack_data import write_stack


def test_selection_file_and_string_agree(tmp_path):
    f = tmp_path / "sel.yaml"
    f.write_text("surface: [39, 43]\nglobular: [98, 12]\n")
    expected = {"surface": [39, 43], "globular": [98, 12]}
    assert read_selection(f) == expected
    assert parse_selection_text("surface=39,43 globular=98,12") == expected
    assert parse_selection_text("surface:39,43; globular:98,12") == expected
    assert parse_selection({"ribo": 5}) == {"ribo": [5]}


def test_selection_file_is_loaded_safely(tmp_path):
    f = tmp_path / "evil.yaml"
    f.write_text("!!python/object/apply:os.system ['touch " + str(tmp_path / "pwned") + "']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_selection(f)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(("text", "message"), [
    ("{}", "the selection is empty"),
    ("", "the selection is empty"),
    ("[1, 2]", "the selection is empty"),
    ("surface: []", "needs a non-empty list"),
    ("surface: [1, 2]\nglobular: [2]", "cluster 2 is selected in two classes ('surface' and 'globular')"),
    ("surface: [1, 1]", "cluster 1 is selected twice"),
    ("surface: [-1]", "integers >= 0"),
    ("surface: [a]", "integers >= 0"),
    ("surface: [true]", "integers >= 0"),
    ("2x: [1]", "bad class name '2x'"),
    ("background: [1]", "names only background clusters"),
    ("Background: [1]\nsurface: [2]", "'background' (lower case) names the negative examples"),
    ("surface: [1", "not valid YAML"),
])
def test_bad_selections_are_one_line_naming_the_file(tmp_path, text, message):
    f = tmp_path / "sel.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        read_selection(f)
    msg = str(exc.value)
    assert msg.startswith(f"{f}: ") and message in msg and "\n" not in msg, msg


def test_bad_selection_strings_name_the_option():
    for text, message in [("surface", "is not CLASS=ID"), ("surface=1,x", "must be integers"),
                          ("a=1 a=2", "given twice"), ("  ", "the selection is empty")]:
        with pytest.raises(ConfigError) as exc:
            parse_selection_text(text)
        assert str(exc.value).startswith("--select: ") and message in str(exc.value)
    with pytest.raises(InputError, match="selection file not found"):
        read_selection("/nonexistent/sel.yaml")


def test_threshold_rule_min_max_scaled_dark_is_the_class():
    d = np.zeros((3, 2, 2, 2), np.float32)
    d[0] = [[[0, 1], [2, 3]], [[4, 5], [6, 10]]]  # scaled: 0 .1 .2 .3 .4 .5 .6 1
    d[1] = 7.0  # constant: no object
    d[2] = -d[0]
    m = weak_masks(d)
    assert m[0].ravel().tolist() == [True] * 6 + [False] * 2  # <= 0.5 (0.5 included)
    assert not m[1].any()
    assert m[2].ravel().tolist() == [False] * 5 + [True] * 3  # scaled: 1 .9 .8 .7 .6 .5 .4 0
    b = weak_masks(d, threshold=0.25, polarity="bright")
    assert b[0].ravel().tolist() == [False] * 3 + [True] * 5
    # shifting or scaling a decoded image changes nothing (min-max scaling)
    assert (weak_masks(3 * d[:1] + 100) == m[:1]).all()


def _stack(tmp_path, n=12, size=8):
    rng = np.random.default_rng(0)
    imgs = rng.normal(size=(n, size, size, size)).astype(np.float32)
    return write_stack(tmp_path / "patches.zarr", imgs, voxel_size=12.5, chunk=4), imgs


def test_written_training_set_labels_only_selected_clusters(tmp_path):
    path, imgs = _stack(tmp_path)
    clusters = np.array([0, 1, 2, 3] * 3)
    decoded = np.zeros_like(imgs)
    decoded[:, :4] = -1.0  # dark upper half: the object
    res = write_weak_labels(path, decoded, clusters, {"surface": [1], "globular": [3, 2]}, tmp_path / "weak",
                            k=4, source="sel.yaml")
    assert res.classes == ["surface", "globular"] and res.patches_per_class == {"surface": 3, "globular": 6}
    assert res.voxel_fraction == {"surface": 0.5, "globular": 0.5}
    p = open_stack_array(res.patches, "p")
    lab = open_stack_array(res.labels, "l")
    chosen = np.flatnonzero(clusters != 0)
    assert p.shape == lab.shape == (9, 8, 8, 8) and lab.dtype == np.uint8 and p.attrs["voxel_size"] == 12.5
    np.testing.assert_array_equal(p[...], imgs[chosen])
    expected_ids = np.where(clusters[chosen] == 1, 1, 2)
    assert (lab[:, :4] == expected_ids[:, None, None, None]).all() and (lab[:, 4:] == 0).all()
    meta = json.loads((tmp_path / "weak" / "classes.json").read_text())
    assert meta["class_ids"] == {"surface": 1, "globular": 2} and meta["patch_index"] == chosen.tolist()
    assert meta["threshold"] == 0.5 and meta["polarity"] == "dark"
    # a decoder function instead of an array: called on the selected patches only
    seen = []

    def decode(batch):
        seen.append(len(batch))
        return -batch

    res2 = write_weak_labels(zarr.open_array(str(path), mode="r"), decode, clusters, {"g": [2]}, tmp_path / "w2")
    assert seen == [3] and res2.patches_per_class == {"g": 3}
    lab2 = zarr.open_array(str(res2.labels), mode="r")[...]
    np.testing.assert_array_equal(lab2 == 1, weak_masks(-imgs[clusters == 2]))


def test_background_clusters_join_as_all_background_patches(tmp_path):
    """Negative examples: the patches of 'background' clusters are in the training set with no labelled voxel."""
    path, imgs = _stack(tmp_path)
    clusters = np.array([0, 1, 2, 3] * 3)
    decoded = np.zeros_like(imgs)
    decoded[:, :4] = -1.0
    res = write_weak_labels(path, decoded, clusters, {"surface": [1], "background": [0, 3]}, tmp_path / "weak", k=4)
    assert res.classes == ["surface"] and res.patches_per_class == {"surface": 3}
    lab = open_stack_array(res.labels, "l")[...]
    p = open_stack_array(res.patches, "p")[...]
    chosen = np.flatnonzero(np.isin(clusters, [0, 1, 3]))
    np.testing.assert_array_equal(p, imgs[chosen])
    is_surface = clusters[chosen] == 1
    assert (lab[is_surface][:, :4] == 1).all() and (lab[~is_surface] == 0).all()
    meta = json.loads((tmp_path / "weak" / "classes.json").read_text())
    assert meta["background_patches"] == 6 and meta["class_ids"] == {"surface": 1}
    assert parse_selection_text("surface=1 background=0,3") == {"surface": [1], "background": [0, 3]}


def test_bad_cluster_ids_and_shapes_leave_nothing(tmp_path):
    path, imgs = _stack(tmp_path)
    clusters = np.array([0, 1, 2, 3] * 3)
    out = tmp_path / "weak"
    cases = [
        ({"a": [4]}, {"k": 4}, "cluster 4 does not exist (k = 4: ids 0..3)"),
        ({"a": [9]}, {}, "cluster 9 has no patches"),
        ({"a": [1], "b": [5]}, {"k": 6}, "class 'b': cluster 5 has no patches"),
    ]
    for sel, kw, message in cases:
        with pytest.raises(ConfigError) as exc:
            write_weak_labels(path, imgs, clusters, sel, out, source="sel.yaml", **kw)
        assert str(exc.value).startswith("sel.yaml: class ") and message in str(exc.value)
        assert not out.exists()
    with pytest.raises(InputError, match="11 cluster labels for a patch stack of shape"):
        write_weak_labels(path, imgs, clusters[:11], {"a": [1]}, out)
    with pytest.raises(InputError, match="decoded images have shape"):
        write_weak_labels(path, imgs[:5], clusters, {"a": [1]}, out)
    with pytest.raises(ConfigError, match="threshold must be between 0 and 1"):
        write_weak_labels(path, imgs, clusters, {"a": [1]}, out, threshold=1.5)

    def broken(batch):
        raise RuntimeError("decoder failed")

    with pytest.raises(RuntimeError):
        write_weak_labels(path, broken, clusters, {"a": [1]}, out)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".weak")]
    write_weak_labels(path, imgs, clusters, {"a": [1]}, out)
    with pytest.raises(OutputError, match="already exists"):
        write_weak_labels(path, imgs, clusters, {"a": [1]}, out)
