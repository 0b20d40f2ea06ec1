"""Ingest of SICAS/SMIR CT volumes: formats, standardisation, orientation, bad input."""

import gzip
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from kneesynth.data.ct_volumes import check_dicom_series, read_volume
from kneesynth.data.ingest import ingest_volume, list_volumes, read_standardised, volume_names
from kneesynth.errors import InputError

INGEST_CFG = {
    "spacing_mm": [4.0, 4.0, 4.0],
    "body_threshold_hu": -400.0,
    "crop_margin_mm": 4.0,
    "min_component_fraction": 0.1,
}


def leg_array(shape=(30, 24, 20)):
    """A leg-like HU volume [z, y, x]: a soft-tissue cylinder along z with a bone at high z, +x."""
    nz, ny, nx = shape
    z, y, x = np.mgrid[:nz, :ny, :nx]
    hu = np.full(shape, -1000.0, dtype=np.float32)
    leg = (y - ny / 2) ** 2 + (x - nx / 2) ** 2 < (min(nx, ny) / 3) ** 2
    hu[leg] = 40.0
    hu[(z >= nz - 6) & (x >= nx // 2) & leg] = 1200.0  # marker: superior, patient's left (+x)
    return hu


def write_image(array, path, spacing=(2.0, 2.0, 2.0), direction=None, origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


def write_dicom_series(folder, hu, positions_mm, spacing=2.0):
    """One CT slice file per z position (pydicom), rescaled int16 like a scanner writes."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    series, study = generate_uid(), generate_uid()
    for index, z in enumerate(positions_mm):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(
            str(folder / f"slice{index:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128
        )
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = "CT", "SMIR-1"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(z)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = spacing
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024.0, 1.0
        ds.PixelData = (hu[index] + 1024).astype(np.uint16).tobytes()
        pydicom.dcmwrite(ds.filename, ds, enforce_file_format=True)
    return folder


def test_list_volumes_finds_every_format_and_ignores_other_files(tmp_path, pydicom_file):
    hu = leg_array()
    write_image(hu, tmp_path / "SMIR.Body.025Y.M.CT.57697.nii")
    write_image(hu, tmp_path / "SMIR.Body.031Y.F.CT.10001.nii.gz")
    (tmp_path / "sub").mkdir()
    write_image(hu, tmp_path / "sub" / "b.mha")
    write_image(hu, tmp_path / "c.nrrd")
    write_dicom_series(tmp_path / "dicom_leg", hu[:4], [0, 2, 4, 6])
    (tmp_path / "README.txt").write_text("notes")
    (tmp_path / ".hidden.nii").write_text("x")
    shutil.copy(pydicom_file("DICOMDIR"), tmp_path / "DICOMDIR")  # a CD export's index
    found = list_volumes(tmp_path)
    assert list(found) == sorted(
        ["SMIR.Body.025Y.M.CT.57697", "SMIR.Body.031Y.F.CT.10001", "b", "c", "dicom_leg"]
    )
    assert found["dicom_leg"].is_dir()


def test_empty_data_folder_is_one_line_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no volumes here")
    with pytest.raises(InputError) as error:
        list_volumes(tmp_path)
    assert str(error.value).startswith(f"{tmp_path}: no CT volumes found")
    assert "\n" not in str(error.value)


def test_duplicate_volume_names_are_an_error(tmp_path):
    write_image(leg_array(), tmp_path / "a.nii")
    write_image(leg_array(), tmp_path / "a.mha")
    with pytest.raises(InputError, match="two volumes are named 'a'"):
        list_volumes(tmp_path)


def test_volume_names_phantom_or_real(tmp_path):
    phantom = {
        "volumes": 2,
        "shape": [8, 8, 8],
        "spacing_mm": [1, 1, 1],
        "noise_hu": 0,
        "kl_grade_weights": [1, 1, 1, 1, 1],
    }
    names = volume_names({"seed": 0, "data": {"sicas_dir": None}, "phantom": phantom})
    assert len(names) == 2 and names[0].startswith("SMIR.Body.")
    write_image(leg_array(), tmp_path / "real.nii.gz")
    assert volume_names({"seed": 0, "data": {"sicas_dir": str(tmp_path)}, "phantom": phantom}) == [
        "real"
    ]


def test_ingest_resamples_crops_and_keeps_hu(tmp_path):
    hu = leg_array()
    source = write_image(hu, tmp_path / "leg.nii", spacing=(2.0, 2.0, 2.0))
    ingest_volume(source, tmp_path / "ct" / "leg.nii.gz", INGEST_CFG)
    array, spacing = read_standardised(tmp_path / "ct" / "leg.nii.gz")
    assert spacing == pytest.approx((4.0, 4.0, 4.0))
    assert array.dtype == np.float32
    assert array.shape[0] == pytest.approx(hu.shape[0] / 2, abs=1)  # the whole leg length is kept
    assert (
        array.shape[1] < hu.shape[1] / 2 and array.shape[2] < hu.shape[2] / 2
    )  # cropped to the leg
    assert array.max() == pytest.approx(1200.0, abs=5) and array.min() >= -1024.0
    assert np.abs(array[array.shape[0] // 2, array.shape[1] // 2, :] - 40.0).min() < 1.0


def test_ingest_reorients_to_lps_so_the_leg_runs_along_z(tmp_path):
    hu = leg_array()
    flipped = np.ascontiguousarray(hu[::-1, :, ::-1])  # stored inferior-first, left-first
    source = write_image(
        flipped, tmp_path / "flipped.nii.gz", direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1)
    )
    ingest_volume(source, tmp_path / "out.nii.gz", {**INGEST_CFG, "spacing_mm": [2.0, 2.0, 2.0]})
    image = sitk.ReadImage(str(tmp_path / "out.nii.gz"))
    assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    array = sitk.GetArrayFromImage(image)
    bone = np.argwhere(array > 600)
    assert bone[:, 0].min() > array.shape[0] / 2  # the marker is superior (large z index)
    assert bone[:, 2].min() >= array.shape[2] / 2 - 1  # and on the patient's left (+x)


def test_ingest_reads_a_dicom_series(tmp_path):
    hu = leg_array((6, 24, 20))
    folder = write_dicom_series(tmp_path / "series", hu, [0, 2, 4, 6, 8, 10])
    image = read_volume(folder)
    assert image.GetSize() == (20, 24, 6)
    assert np.allclose(sitk.GetArrayFromImage(image), hu)


def test_truncated_nifti_is_one_line_error(tmp_path):
    source = write_image(leg_array(), tmp_path / "leg.nii")
    data = source.read_bytes()
    source.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"leg\.nii: cannot read the NIfTI file \(truncated"):
        read_volume(source)


def test_truncated_gzip_nifti_is_an_error_and_nothing_is_written(tmp_path):
    source = write_image(leg_array(), tmp_path / "leg.nii")
    compressed = gzip.compress(source.read_bytes())
    (tmp_path / "leg2.nii.gz").write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(InputError, match="leg2.nii.gz: cannot read"):
        ingest_volume(tmp_path / "leg2.nii.gz", tmp_path / "ct" / "leg2.nii.gz", INGEST_CFG)
    assert not (tmp_path / "ct").exists() or not list((tmp_path / "ct").iterdir())


def test_volume_with_nan_is_an_error(tmp_path):
    import nibabel as nib

    hu = leg_array()
    hu[5, 6, 7] = np.nan
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), np.eye(4)), str(tmp_path / "nan.nii"))
    with pytest.raises(InputError, match=r"nan\.nii: 1 NaN or infinite voxel"):
        read_volume(tmp_path / "nan.nii")


def test_dicom_series_with_a_missing_slice_is_an_error(tmp_path):
    hu = leg_array((5, 8, 8))
    folder = write_dicom_series(tmp_path / "gap", hu, [0, 2, 4, 8, 10])  # 6 mm is missing
    with pytest.raises(
        InputError, match=r"gap: missing slice\(s\): gap of 4.00 mm between 4.00 and 8.00"
    ):
        check_dicom_series(folder)


def test_dicom_series_with_uneven_spacing_is_an_error(tmp_path):
    hu = leg_array((5, 8, 8))
    folder = write_dicom_series(tmp_path / "uneven", hu, [0, 2, 4, 7, 9])
    with pytest.raises(InputError, match="uneven: uneven slice spacing: gap of 3.00 mm"):
        read_volume(folder)


def test_volume_without_a_leg_is_an_error(tmp_path):
    source = write_image(np.full((8, 8, 8), -1000.0, dtype=np.float32), tmp_path / "air.nii")
    with pytest.raises(InputError, match="air.nii: no voxel above -400.0 HU"):
        ingest_volume(source, tmp_path / "out.nii.gz", INGEST_CFG)
    assert not (tmp_path / "out.nii.gz").exists()


# --------------------------------------------------------------------------------------------
# Real data as it comes: what an input is, geometry, refusals that name the file.
# --------------------------------------------------------------------------------------------
BONE_CENTRE_MM = np.array([6.0, -4.0, 30.0])  # LPS
BONE_RADIUS_MM = 9.0


def leg_at(points_mm: np.ndarray) -> np.ndarray:
    """HU of a leg phantom at LPS points (..., 3): soft tissue cylinder along z (radius 40 mm),
    a bone ball at BONE_CENTRE_MM, air around."""
    radial = np.hypot(points_mm[..., 0], points_mm[..., 1])
    hu = np.where(radial < 40.0, 40.0, -1000.0)
    ball = np.linalg.norm(points_mm - BONE_CENTRE_MM, axis=-1) < BONE_RADIUS_MM
    return np.where(ball, 1200.0, hu).astype(np.float32)


def bone_centre(path) -> np.ndarray:
    """LPS centre (mm) of the voxels above 600 HU of a standardised volume."""
    image = sitk.ReadImage(str(path))
    assert image.GetDirection() == pytest.approx(np.eye(3).ravel())
    array = sitk.GetArrayFromImage(image)
    z, y, x = np.nonzero(array > 600)
    index = np.stack([x, y, z], axis=1).mean(axis=0)
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint(index.tolist()))


def test_oblique_volume_is_resampled_onto_lps_axes(tmp_path):
    """A volume scanned at 30 degrees: the output is axis-aligned and the bone where it was."""
    angle = np.radians(30)
    direction = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    size, spacing = np.array([48, 48, 40]), 2.0
    origin = -direction @ (size * spacing / 2) + np.array([0, 0, 30.0])
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), axis=-1)
    points = origin + (index * spacing) @ direction.T  # (x, y, z, 3)
    array = leg_at(points).transpose(2, 1, 0)  # [z, y, x]
    source = write_image(
        array,
        tmp_path / "oblique.mha",
        spacing=(spacing,) * 3,
        direction=tuple(direction.ravel()),
        origin=tuple(origin),
    )
    ingest_volume(source, tmp_path / "ct.nii.gz", {**INGEST_CFG, "spacing_mm": [2.0] * 3})
    assert np.linalg.norm(bone_centre(tmp_path / "ct.nii.gz") - BONE_CENTRE_MM) < 1.5


def write_slices(folder, slices, positions, orientation, spacing=2.0, modality="CT", **extra):
    """One DICOM file per slice (int16 stored, rescaled to HU), like a scanner writes."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(), generate_uid()
    files = []
    for index, (pixels, position) in enumerate(zip(slices, positions, strict=True)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice{index:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = modality, "SMIR-2"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = [spacing, spacing]
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024.0, 1.0
        for key, value in extra.items():
            setattr(ds, key, value)
        ds.PixelData = np.rint(pixels + 1024).astype(np.int16).tobytes()
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        files.append(path)
    return files


def test_gantry_tilt_is_resampled_not_lost(tmp_path):
    """Slices tilted 20 degrees about x, stacked along z (a tilted gantry): the bone lands
    where it is, not shifted by z * tan(20 degrees) as when the tilt is ignored."""
    tilt = np.radians(20)
    row, column = np.array([1.0, 0, 0]), np.array([0, np.cos(tilt), np.sin(tilt)])
    n, spacing, dz = 48, 2.0, 2.5
    positions = [np.array([-47.0, -47.0 * np.cos(tilt), k * dz]) for k in range(32)]
    j, i = np.mgrid[:n, :n]
    slices = [
        leg_at(p + (i * spacing)[..., None] * row + (j * spacing)[..., None] * column)
        for p in positions
    ]
    folder = tmp_path / "tilted"
    write_slices(folder, slices, positions, [*row, *column], spacing)
    ingest_volume(folder, tmp_path / "ct.nii.gz", {**INGEST_CFG, "spacing_mm": [2.0] * 3})
    assert np.linalg.norm(bone_centre(tmp_path / "ct.nii.gz") - BONE_CENTRE_MM) < 1.5


def test_thick_slices_upsampled_more_than_4x_are_a_warning(tmp_path, caplog):
    hu = leg_array((6, 24, 20))
    source = write_image(hu, tmp_path / "thick.nii.gz", spacing=(1.0, 1.0, 20.0))
    with caplog.at_level("WARNING"):
        ingest_volume(source, tmp_path / "ct.nii.gz", {**INGEST_CFG, "spacing_mm": [2.5] * 3})
    assert "thick.nii.gz: voxels of 20 mm along image axis z upsampled 8.0x" in caplog.text


def test_a_volume_with_an_oblique_direction_is_refused_downstream(tmp_path):
    write_image(leg_array(), tmp_path / "raw.nii.gz", direction=(0, -1, 0, 1, 0, 0, 0, 0, 1))
    with pytest.raises(InputError, match=r"raw\.nii\.gz: direction is not the identity"):
        read_standardised(tmp_path / "raw.nii.gz")


def test_mr_series_is_not_taken_for_ct(tmp_path, pydicom_file):
    import pydicom

    mr = pydicom.dcmread(pydicom_file("MR_small.dcm"))  # a real MR slice
    folder = tmp_path / "mr"
    folder.mkdir()
    for k in range(3):
        mr.ImagePositionPatient = [-83.9063, -91.2, 6.6406 + 0.8 * k]
        mr.SOPInstanceUID = f"{mr.SOPInstanceUID}.{k}"
        mr.save_as(folder / f"{k}.dcm")
    with pytest.raises(InputError) as error:
        read_volume(folder)
    assert str(error.value) == (
        f"{folder}/0.dcm: Modality MR: not a CT series (expected Modality CT) "
        "(set ingest.input_checks: relaxed to use it anyway)"
    )


def test_mr_like_values_do_not_look_like_ct(tmp_path, caplog):
    """An MR in NIfTI (no header says what it is): intensities >= 0, no air near -1000 HU."""
    rng = np.random.default_rng(0)
    mr = (rng.gamma(2.0, 400.0, (20, 24, 20))).astype(np.float32)
    source = write_image(mr, tmp_path / "t1.nii.gz")
    with pytest.raises(InputError, match=r"t1\.nii\.gz: does not look like CT in HU: 0\.0% of"):
        ingest_volume(source, tmp_path / "ct.nii.gz", INGEST_CFG)
    raw = write_image(leg_array() + 1024.0, tmp_path / "stored_values.nii.gz")  # no rescale
    with pytest.raises(InputError, match="an MR, or a CT without its rescale to HU"):
        read_volume(raw)
    with caplog.at_level("WARNING"):
        read_volume(raw, checks="relaxed")
    assert "used anyway (ingest.input_checks: relaxed)" in caplog.text


def test_real_ct_slices_compressed_or_not_read_the_same(tmp_path, pydicom_file):
    """A real CT (pydicom's 693 test series), as JPEG 2000 and uncompressed, with a DICOMDIR
    beside the slices."""
    pytest.importorskip("openjpeg")

    import pydicom

    images = []
    for name in ("693_UNCR.dcm", "693_J2KR.dcm"):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        for k in range(3):
            ds = pydicom.dcmread(pydicom_file(name))
            ds.ImagePositionPatient = [-122.5, -112.4, 47.0 + 5.0 * k]
            ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{k}"
            ds.save_as(folder / f"{k}.dcm")
        shutil.copy(pydicom_file("DICOMDIR"), folder / "DICOMDIR")
        images.append(sitk.GetArrayFromImage(read_volume(folder)))
    assert images[0].shape == (3, 512, 512)
    assert np.array_equal(images[0], images[1])
    assert images[0].min() == -3024.0  # rescaled to HU (padding outside the field of view)


def test_enhanced_multiframe_ct_is_read_whole(tmp_path, pydicom_file):

    folder = tmp_path / "enhanced"
    folder.mkdir()
    shutil.copy(pydicom_file("eCT_Supplemental.dcm"), folder / "volume.dcm")
    image = read_volume(folder, checks="relaxed")  # a perfusion map: few voxels of air
    assert sorted(image.GetSize()) == [2, 512, 512]
    assert sorted(image.GetSpacing()) == pytest.approx([0.388672, 0.388672, 10.0])


def test_enhanced_ct_beside_slices_is_one_clear_line(tmp_path, pydicom_file):

    folder = tmp_path / "mixed"
    axial_series(folder, slices=2, size=8)
    shutil.copy(pydicom_file("eCT_Supplemental.dcm"), folder / "enhanced.dcm")
    with pytest.raises(InputError) as error:
        read_volume(folder)
    assert str(error.value) == (
        f"{folder}/enhanced.dcm: an Enhanced (multi-frame) image of 2 frames beside 2 other "
        "slice file(s): give it a folder of its own"
    )


def axial_series(folder, slices=4, size=12):
    """A small axial CT series, 2 mm apart: (the slice files, their HU)."""
    hu = leg_array((slices, size, size))
    files = write_slices(folder, list(hu), [[0, 0, 2 * k] for k in range(slices)], AXIAL)
    return files, hu


AXIAL = [1, 0, 0, 0, 1, 0]


def test_a_slice_of_another_size_is_named(tmp_path):
    import pydicom

    folder = tmp_path / "series"
    files, hu = axial_series(folder)
    write_slices(tmp_path / "other", [hu[0, :10, :10]], [[0, 0, 8]], AXIAL)
    odd = pydicom.dcmread(tmp_path / "other" / "slice000.dcm")
    odd.SeriesInstanceUID = pydicom.dcmread(files[0]).SeriesInstanceUID
    odd.save_as(folder / "slice004.dcm")
    with pytest.raises(InputError) as error:
        read_volume(folder)
    assert str(error.value) == (
        f"{folder}/slice004.dcm: slice of 10 x 10 pixels; the other slices of the series "
        "are 12 x 12"
    )


def test_a_truncated_slice_is_named(tmp_path):
    files, _ = axial_series(tmp_path / "series")
    files[2].write_bytes(files[2].read_bytes()[:-100])
    with pytest.raises(InputError, match=r"series/slice002\.dcm: pixel data is truncated"):
        read_volume(tmp_path / "series")


def test_a_truncated_metaimage_says_truncated(tmp_path):
    source = write_image(leg_array(), tmp_path / "leg.mha")
    data = source.read_bytes()
    source.write_bytes(data[: len(data) - 1000])
    with pytest.raises(InputError) as error:
        read_volume(source)
    assert str(error.value) == (
        f"{source}: truncated: {len(data) - 1000 - (len(data) - 30 * 24 * 20 * 4)} of "
        f"{30 * 24 * 20 * 4} bytes of voxel data (14400 voxels)"
    )
    assert "No such file" not in str(error.value)


def test_a_4d_volume_is_refused(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 3), np.float32), np.eye(4)), tmp_path / "4d.nii")
    with pytest.raises(InputError, match=r"4d\.nii: expected one 3D volume, got a 4D image"):
        read_volume(tmp_path / "4d.nii")
