"""The clusters gallery: one self-contained HTML file and a clusters table, written atomically."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from deepict_dask.errors import InputError
from deepict_dask.io.coords import make_table
from deepict_dask.mine import (
    ClusterOptions,
    GalleryOptions,
    MineLayout,
    PatchOptions,
    extract_patches,
    write_gallery,
)
from deepict_dask.mine import api as mine_api
from deepict_dask.mine.gallery import cluster_means, montage, overlay
from deepict_dask.models import save_model
from deepict_dask.models.autoencoder import Autoencoder3D, autoencoder_info


def test_montage_shows_every_slice():
    vol = np.arange(5 * 3 * 4, dtype=np.float32).reshape(5, 3, 4)
    img = montage(vol, columns=2, zoom=1)
    assert img.shape == (3 * 4 - 1, 2 * 5 - 1)  # 3 rows of slices, 2 columns, 1-pixel gaps
    assert img[8:11, 0:4].max() > 0.9  # slice 4 (the last, highest values) is in row 3
    assert np.all(img[3, :] == 1) and np.all(img[:, 4] == 1)  # white gaps


def test_cluster_means_and_overlay():
    stack = np.stack([np.full((2, 2, 2), v, np.float32) for v in (1, 3, 10, 20)])
    means = cluster_means(stack, np.array([0, 0, 1, 2]), 4)
    assert means[:, 0, 0, 0].tolist() == [2, 10, 20, 0]
    planes = [np.zeros((8, 10)), np.zeros((6, 10)), np.zeros((6, 8))]
    rgb = overlay(planes, 1, np.array([[3, 4, 5]]))
    assert rgb.shape == (8, 10 + 4 + 10 + 4 + 8 + 4, 3)
    assert (rgb[::-1][4, 5] == [230, 159, 0]).all()  # xy plane: row y=4, column x=5


def test_gallery_end_to_end(blob_mrc, tmp_path, monkeypatch):
    path = blob_mrc("tomoA")
    zyx = np.array([(z, y, x) for z in (12, 30, 48) for y in (12, 30, 48) for x in (16, 48)])
    layout = MineLayout.at(tmp_path / "mine")
    extract_patches([path], make_table("tomoA", "grid", zyx=zyx, voxel_size=10.0), layout,
                    PatchOptions(patch_shape=(16, 16, 16)))
    torch.manual_seed(0)
    save_model(layout.autoencoder, Autoencoder3D(patch_shape=(16, 16, 16), code_dim=4, filters=2),
               autoencoder_info("ae", patch_shape=(16, 16, 16), code_dim=4, filters=2, voxel_size=10.0))
    with pytest.raises(InputError, match="no clusters yet"):
        write_gallery(layout, [path])
    mine_api.encode_patches(layout)
    labels = mine_api.cluster_codes(layout, ClusterOptions(k=3, batch_size=16))
    table = write_gallery(layout, [path], options=GalleryOptions(columns=4), device="cpu")
    assert table["size"].sum() == len(zyx) == len(labels)
    assert table["size"].tolist() == np.bincount(labels, minlength=3).tolist()
    back = pd.read_csv(layout.clusters_table)
    assert back["cluster"].tolist() == [0, 1, 2] and set(back["main_tomo"]) == {"tomoA"}
    doc = layout.gallery.read_text()
    sizes = sorted(table["size"], reverse=True)
    titles = re.findall(r"<h3>Cluster (\d+): (\d+) patches", doc)
    assert [int(n) for _, n in titles] == sizes  # largest first
    n_images = 3 * (table["size"] > 0).sum() + (table["size"] == 0).sum()
    assert doc.count('src="data:image/png;base64,') == n_images
    assert "http" not in doc and "<script" not in doc  # self-contained
    assert zarr.open_array(str(layout.labels), mode="r").shape == (len(zyx),)
