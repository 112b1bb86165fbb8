"""MRC reading (lazy, checked headers) and chunk-by-chunk MRC writing."""

from __future__ import annotations

import pickle

import dask
import mrcfile
import numpy as np
import pytest

from deepict_dask.errors import InputError
from deepict_dask.io import count_nonfinite, make_volume, open_volume, read_mrc_header, write_mrc
from deepict_dask.io.mrc import MrcBlockReader
from tests.helpers import mrc_file

VOXEL, ORIGIN = (3.0, 2.0, 1.5), (10.0, 20.0, 30.0)  # (x, y, z) like mrcfile: anisotropic, off-origin


@pytest.fixture(scope="module")
def tomo(tmp_path_factory):
    data = np.random.default_rng(0).normal(size=(20, 24, 28)).astype(np.float32)
    return mrc_file(tmp_path_factory.mktemp("mrc") / "tomo.mrc", data, voxel=VOXEL, origin=ORIGIN), data


def test_open_mrc_lazy_chunks_and_metadata(tomo):
    path, data = tomo
    v = open_volume(path, chunks=8)
    assert v.dims == ("z", "y", "x")
    assert v.data.chunks == ((8, 8, 4), (8, 8, 8), (8, 8, 8, 4))
    assert v.attrs["voxel_size"] == (1.5, 2.0, 3.0)  # ZYX from the header's x=3, y=2, z=1.5
    assert v.attrs["origin"] == (30.0, 20.0, 10.0)
    assert v.attrs["source"] == str(path)
    assert v.attrs["mrc_header"]["nx"] == 28 and v.attrs["mrc_header"]["mode"] == 2
    assert v["x"].values[1] - v["x"].values[0] == pytest.approx(3.0)
    with dask.config.set(scheduler="synchronous"):
        np.testing.assert_array_equal(v.values, data)
        np.testing.assert_array_equal(v.isel(z=slice(5, 13), x=slice(3, 9)).values, data[5:13, :, 3:9])


def test_graph_holds_no_memmap(tomo):
    path, data = tomo
    v = open_volume(path, chunks=10)
    reader = pickle.loads(pickle.dumps(MrcBlockReader(str(path), data.shape, np.dtype("<f4"), 1024)))
    np.testing.assert_array_equal(reader[2:4, 1:3, 5:9], data[2:4, 1:3, 5:9])
    assert len(pickle.dumps(dict(v.data.dask))) < data.nbytes // 4


def test_big_endian_mrc(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=">i2").reshape(4, 5, 6)
    path = tmp_path / "be.mrc"
    with mrcfile.new(path) as m:
        m.set_data(data)
        m.voxel_size = 1.0
    v = open_volume(path)
    assert v.dtype == np.int16 and v.dtype.byteorder in ("=", "|", "<")
    np.testing.assert_array_equal(v.values, data.astype(np.int16))


def test_write_mrc_round_trip_and_header_stats(tmp_path, tomo):
    _, data = tomo
    vol = make_volume(data, (1.5, 2.0, 3.0), origin=(30.0, 20.0, 10.0), chunks=7)
    out = write_mrc(vol, tmp_path / "out.mrc")
    with mrcfile.open(out, permissive=False) as m:
        np.testing.assert_array_equal(m.data, data)
        assert (float(m.voxel_size.x), float(m.voxel_size.y), float(m.voxel_size.z)) == (3.0, 2.0, 1.5)
        assert m.header.dmin == pytest.approx(data.min())
        assert m.header.dmax == pytest.approx(data.max())
        assert m.header.dmean == pytest.approx(data.mean(), abs=1e-6)
        assert m.header.rms == pytest.approx(data.std(), rel=1e-5)
    back = open_volume(out)
    assert back.attrs["origin"] == (30.0, 20.0, 10.0)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mrc"]


def test_write_mrc_converts_float64_and_int64(tmp_path):
    f = make_volume(np.linspace(0, 1, 2 * 3 * 4).reshape(2, 3, 4), 2.0)
    assert open_volume(write_mrc(f, tmp_path / "f.mrc")).dtype == np.float32
    lab = make_volume(np.arange(24, dtype=np.int64).reshape(2, 3, 4) * 1000, 2.0)
    back = open_volume(write_mrc(lab, tmp_path / "l.mrc"))
    np.testing.assert_array_equal(back.values, lab.values)


def test_write_mrc_failure_leaves_nothing(tmp_path):
    def boom(block):
        raise RuntimeError("disk full")

    vol = make_volume(np.zeros((8, 8, 8), np.float32), chunks=4)
    bad = vol.copy(data=vol.data.map_blocks(boom, dtype=np.float32))
    with pytest.raises(RuntimeError):
        write_mrc(bad, tmp_path / "x.mrc")
    assert list(tmp_path.iterdir()) == []


def test_write_mrc_refuses_existing_without_overwrite(tmp_path, tomo):
    path, _ = tomo
    vol = open_volume(path)
    write_mrc(vol, tmp_path / "a.mrc")
    with pytest.raises(Exception, match="already exists"):
        write_mrc(vol, tmp_path / "a.mrc", overwrite=False)


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file") as e:
        open_volume(tmp_path / "nope.mrc")
    assert "nope.mrc" in str(e.value)


def test_not_an_mrc(tmp_path):
    text = tmp_path / "notes.mrc"
    text.write_text("this is not a tomogram\n" * 100)
    with pytest.raises(InputError, match="not an MRC file") as e:
        open_volume(text)
    assert "notes.mrc" in str(e.value)
    tiny = tmp_path / "tiny.rec"
    tiny.write_bytes(b"MAP ")
    with pytest.raises(InputError, match="only 4 bytes"):
        open_volume(tiny)


def test_truncated_mrc_names_both_sizes(tmp_path):
    path = mrc_file(tmp_path / "t.mrc", np.zeros((10, 20, 30), np.float32), voxel=VOXEL, origin=ORIGIN)
    raw = path.read_bytes()
    path.write_bytes(raw[:-1000])
    with pytest.raises(InputError, match="truncated") as e:
        read_mrc_header(path)
    msg = str(e.value)
    assert "25024" in msg and "24024" in msg and "t.mrc" in msg


def test_2d_mrc_rejected_unless_allowed(tmp_path):
    path = mrc_file(tmp_path / "img.mrc", np.ones((20, 30), np.float32), voxel=VOXEL, origin=ORIGIN)
    with pytest.raises(InputError, match="2D image"):
        open_volume(path)
    assert open_volume(path, allow_2d=True).shape == (1, 20, 30)


def test_unsupported_mode_and_extension(tmp_path):
    path = mrc_file(tmp_path / "m.mrc", np.zeros((2, 3, 4), np.float32), voxel=VOXEL, origin=ORIGIN)
    raw = bytearray(path.read_bytes())
    raw[12:16] = np.int32(77).tobytes()
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="unsupported MRC data mode 77"):
        open_volume(path)
    other = tmp_path / "x.tif"
    other.write_bytes(b"II*\x00")
    with pytest.raises(InputError, match="unsupported file type '.tif'"):
        open_volume(other)


def test_old_mrc_without_stamp_is_accepted(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    path = mrc_file(tmp_path / "old.mrc", data, voxel=VOXEL, origin=ORIGIN)
    raw = bytearray(path.read_bytes())
    raw[208:212] = b"\0\0\0\0"
    path.write_bytes(bytes(raw))
    np.testing.assert_array_equal(open_volume(path).values, data)


def test_count_nonfinite(tmp_path):
    data = np.zeros((6, 6, 6), np.float32)
    data[1, 2, 3] = np.nan
    data[4, 4, 4] = np.inf
    data[0, 0, 0] = -np.inf
    vol = open_volume(mrc_file(tmp_path / "n.mrc", data, voxel=VOXEL, origin=ORIGIN), chunks=3)
    assert count_nonfinite(vol) == 3
    assert count_nonfinite(make_volume(np.zeros((2, 2, 2), np.int16))) == 0


def test_imod_mode0_unsigned_bytes(tmp_path):
    data = np.array([0, 100, 200, 255], dtype=np.uint8).reshape(1, 2, 2).repeat(2, axis=0)
    path = tmp_path / "imod.mrc"
    with mrcfile.new(path) as m:
        m.set_data(data.view(np.int8))
        m.voxel_size = 1.0
    raw = bytearray(path.read_bytes())
    raw[152:160] = np.array([1146047817, 0], dtype="<i4").tobytes()  # IMOD stamp, flags: unsigned
    path.write_bytes(bytes(raw))
    np.testing.assert_array_equal(open_volume(path).values, data)
    raw[156:160] = np.array([1], dtype="<i4").tobytes()  # flag bit 0: signed bytes
    path.write_bytes(bytes(raw))
    assert open_volume(path).dtype == np.int8


def test_voxel_size_is_the_decimal_the_header_means(tmp_path):
    path = mrc_file(tmp_path / "v.mrc", np.zeros((4, 5, 6), np.float32), voxel=(7.89, 7.89, 13.48), origin=ORIGIN)
    with mrcfile.open(path) as m:  # the float32 header holds 13.479999542236328, mrcfile shows 13.48
        assert float(m.voxel_size.z) != 13.48 and str(m.voxel_size.z) == "13.48"
    vol = open_volume(path)
    assert vol.attrs["voxel_size"] == (13.48, 7.89, 7.89)  # exact, and x equals y
    assert read_mrc_header(path).voxel_size == (13.48, 7.89, 7.89)


@pytest.mark.parametrize("bad", [0.0, float("nan"), -5.0])
def test_unset_or_bad_voxel_size_is_refused_unless_given(tmp_path, bad):
    path = mrc_file(tmp_path / "novs.mrc", np.ones((4, 5, 6), np.float32), voxel=(bad, bad, bad), origin=ORIGIN)
    with pytest.raises(InputError, match=r"novs\.mrc: voxel size is (0|nan|-5) Å in the header; give voxel_size \(on the command line --voxel-size"):
        open_volume(path)
    assert open_volume(path, voxel_size=13.48).attrs["voxel_size"] == (13.48, 13.48, 13.48)
    assert open_volume(path, voxel_size=(2.0, 3.0, 4.0)).attrs["voxel_size"] == (2.0, 3.0, 4.0)
    with pytest.raises(InputError, match="voxel size given must be positive"):
        open_volume(path, voxel_size=0.0)


def test_unset_voxel_size_message_fits_commands_without_the_option(tmp_path, capsys):
    """'deepict filter' has no --voxel-size: its error must not tell the user to pass one."""
    from deepict_dask.cli.main import main

    path = mrc_file(tmp_path / "novs.mrc", np.ones((4, 5, 6), np.float32), voxel=(0.0, 0.0, 0.0), origin=ORIGIN)
    assert main(["filter", str(path), "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "voxel size is 0" in err and "deepict convert --voxel-size" in err


def test_complex_mrc_is_refused(tmp_path):
    path = tmp_path / "fft.mrc"
    with mrcfile.new(path) as m:
        m.set_data(np.ones((2, 3, 4), np.complex64))
        m.voxel_size = 1.0
    with pytest.raises(InputError, match=r"fft\.mrc: complex MRC data \(mode 4\) is not supported"):
        open_volume(path)
    raw = bytearray(path.read_bytes())
    raw[12:16] = np.int32(3).tobytes()  # complex int16
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"mode 3\) is not supported"):
        open_volume(path)
