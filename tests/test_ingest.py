"""Ingest of SICAS/SMIR CT volumes: formats, standardisation, orientation, bad input."""

import gzip

import numpy as np
import pytest
import SimpleITK as sitk

from kneesynth.errors import InputError
from kneesynth.ingest import (
    check_dicom_series,
    ingest_volume,
    list_volumes,
    read_standardised,
    read_volume,
    volume_names,
)

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


def test_list_volumes_finds_every_format_and_ignores_other_files(tmp_path):
    hu = leg_array()
    write_image(hu, tmp_path / "SMIR.Body.025Y.M.CT.57697.nii")
    write_image(hu, tmp_path / "SMIR.Body.031Y.F.CT.10001.nii.gz")
    (tmp_path / "sub").mkdir()
    write_image(hu, tmp_path / "sub" / "b.mha")
    write_image(hu, tmp_path / "c.nrrd")
    write_dicom_series(tmp_path / "dicom_leg", hu[:4], [0, 2, 4, 6])
    (tmp_path / "README.txt").write_text("notes")
    (tmp_path / ".hidden.nii").write_text("x")
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
