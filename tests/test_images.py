"""The one radiograph reader: one intensity rule for every stage, and DICOM as it comes
(compressed transfer syntaxes, MONOCHROME1, 10- and 15-bit data, pixel spacing in mm).

DICOM inputs are pydicom's own test files (real files from scanners and toolkits), via
``pydicom.data.get_testdata_file`` (the pydicom-data package holds the larger ones).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from kneesynth.data.images import (
    ImageFiles,
    dicom_knee_crops,
    dicom_pixel_array,
    grey_radiograph,
    load_images,
    pixel_spacing_mm,
    read_radiograph,
)
from kneesynth.data.manifest import read_oai_manifest
from kneesynth.errors import InputError
from kneesynth.study_b.classify import load_image_set
from kneesynth.study_b.ddpm import to_model_range


def knee_like(size=48, seed=0) -> np.ndarray:
    """A uint8 image using the whole 8-bit range (a gradient, a bright 'bone' and noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    image = 40 + 150 * x / size + 60 * ((x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 4) ** 2)
    image = image + rng.normal(0, 12, (size, size))
    image[0, 0], image[-1, -1] = 0, 255
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def write_8_and_16_bit(folder, image):
    """The same image as an 8-bit PNG and as a 16-bit PNG (v * 257: the same fraction of full scale)."""
    folder.mkdir(parents=True, exist_ok=True)
    eight, sixteen = folder / "knee8.png", folder / "knee16.png"
    Image.fromarray(image, mode="L").save(eight)
    Image.fromarray(image.astype(np.uint16) * 257).save(sixteen)
    assert Image.open(sixteen).mode.startswith("I")  # really 16-bit on disk
    return eight, sixteen


@pytest.mark.parametrize("size", [48, 32])  # as stored, and resized by every stage
def test_every_stage_reads_an_8_and_16_bit_png_as_the_same_tensor(tmp_path, size):
    image = knee_like(48)
    eight, sixteen = write_8_and_16_bit(tmp_path, image)

    # study B generators and FID (load_images -> model range)
    generator = [to_model_range(load_images([p], size)) for p in (eight, sixteen)]
    assert generator[0].dtype == generator[1].dtype
    assert np.array_equal(generator[0].numpy(), generator[1].numpy())
    # memorisation, realism and the reader kit (ImageFiles)
    files = ImageFiles([eight, sixteen], size=(size, size))[0:2]
    assert np.array_equal(files[0], files[1])
    # KL classifiers (classify.load_image_set from a manifest)
    manifest = tmp_path / "manifest.tsv"
    pd.DataFrame(
        {
            "image": [str(eight), str(sixteen), str(eight)],
            "participant": ["9000001", "9000002", "9000003"],
            "side": ["L", "L", "L"],
            "visit": [0, 0, 0],
            "kl_grade": [0, 0, 1],
            "split": ["train", "val", "test"],
        }
    ).to_csv(manifest, sep="\t", index=False)
    table = read_oai_manifest(manifest, every_split=True)
    classifier = load_image_set(table, manifest, size).images
    assert torch_equal(classifier[0], classifier[1])

    # one intensity rule across stages, and nothing saturates
    assert np.array_equal(classifier[0, 0].numpy(), files[0])
    expected = read_radiograph(eight, size)
    assert np.allclose(generator[1][0, 0].numpy(), np.rint(expected * 255) / 127.5 - 1, atol=1e-6)
    at_white = float((load_images([sixteen], size) == 255).mean())
    assert at_white < 0.05


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_rgb_and_jpeg_read_as_grey_on_the_same_scale(tmp_path):
    image = knee_like(32, seed=3)
    Image.fromarray(np.stack([image] * 3, axis=-1), mode="RGB").save(tmp_path / "rgb.png")
    Image.fromarray(image, mode="L").save(tmp_path / "grey.png")
    Image.fromarray(image, mode="L").save(tmp_path / "grey.jpg", quality=100)
    grey = read_radiograph(tmp_path / "grey.png")
    assert np.array_equal(read_radiograph(tmp_path / "rgb.png"), grey)
    assert np.abs(read_radiograph(tmp_path / "grey.jpg") - grey).max() < 0.05
    assert grey.dtype == np.float32 and grey.min() == 0.0 and grey.max() == 1.0


def test_truncated_or_fake_png_is_one_line_naming_the_file(tmp_path):
    eight, _ = write_8_and_16_bit(tmp_path, knee_like(48))
    data = eight.read_bytes()
    eight.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"knee8\.png: cannot read image"):
        read_radiograph(eight)
    (tmp_path / "text.png").write_text("not a png")
    with pytest.raises(InputError, match=r"text\.png: cannot read image"):
        read_radiograph(tmp_path / "text.png")


# --------------------------------------------------------------------------------------------
# DICOM: transfer syntaxes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("compressed", "uncompressed"),
    [
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS lossless
        ("MR_small_RLE.dcm", "MR_small.dcm"),  # RLE lossless
        ("RG1_J2KR.dcm", "RG1_UNCR.dcm"),  # JPEG 2000 lossless, 15-bit CR
        ("RG3_J2KR.dcm", "RG3_UNCR.dcm"),  # JPEG 2000 lossless, 10-bit CR
        ("693_J2KR.dcm", "693_UNCR.dcm"),  # JPEG 2000 lossless CT
    ],
)
def test_compressed_pixel_data_decode_to_the_uncompressed_pixels(
    compressed, uncompressed, pydicom_file
):
    pytest.importorskip("openjpeg")
    a = dicom_pixel_array(pydicom.dcmread(pydicom_file(compressed)), compressed)
    b = dicom_pixel_array(pydicom.dcmread(pydicom_file(uncompressed)), uncompressed)
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    ("name", "bits"),
    [
        ("JPEG-LL.dcm", 16),  # JPEG Lossless, Non-Hierarchical, First-Order Prediction
        ("JPGExtended.dcm", 12),  # 12-bit JPEG Extended (Process 2 and 4)
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", 8),
    ],
)
def test_jpeg_lossless_and_12_bit_extended_decode(name, bits, pydicom_file):
    pytest.importorskip("libjpeg")
    dataset = pydicom.dcmread(pydicom_file(name))
    pixels = dicom_pixel_array(dataset, name)
    assert pixels.shape == (dataset.Rows, dataset.Columns)
    assert 0 < int(pixels.max()) < 2**bits and len(np.unique(pixels)) > 10


def test_missing_decoder_names_the_optional_extra(pydicom_file):
    """Without pylibjpeg, GDCM or pyjpegls, compressed pixel data name the extra to install."""
    script = textwrap.dedent(
        """
        import sys
        for name in ("pylibjpeg", "libjpeg", "openjpeg", "rle", "jpeg_ls", "_CharLS", "gdcm"):
            sys.modules[name] = None  # import fails: as if not installed
        import pydicom
        from pydicom.data import get_testdata_file
        from kneesynth.errors import InputError
        from kneesynth.data.images import dicom_pixel_array
        path = get_testdata_file(sys.argv[1])
        try:
            dicom_pixel_array(pydicom.dcmread(path), "scan.dcm")
        except InputError as error:
            print(error)
        """
    )
    for name in ("JPEG-LL.dcm", "JPGExtended.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        pydicom_file(name)
        run = subprocess.run(
            [sys.executable, "-c", script, name], capture_output=True, text=True, timeout=120
        )
        message = run.stdout.strip()
        assert message.startswith("scan.dcm: pixel data compressed as JPEG"), run.stderr
        assert "no installed decoder reads it" in message
        assert 'pip install -e ".[dicom]"' in message and "\n" not in message


def test_truncated_pixel_data_is_one_line_naming_the_file(pydicom_file):
    path = pydicom_file("MR_truncated.dcm")
    with pytest.raises(InputError, match=r"MR_truncated\.dcm: pixel data is truncated"):
        dicom_pixel_array(pydicom.dcmread(path), path)


# --------------------------------------------------------------------------------------------
# DICOM radiographs: MONOCHROME1, spacing in mm
# --------------------------------------------------------------------------------------------
def test_monochrome1_is_inverted_so_bone_is_bright(pydicom_file):
    dataset = pydicom.dcmread(pydicom_file("RG3_UNCR.dcm"))  # CR, MONOCHROME1, 10-bit
    as_stored = dataset.pixel_array.astype(np.float32)
    inverted = grey_radiograph(dataset, "RG3")
    assert np.allclose(inverted, as_stored.max() + as_stored.min() - as_stored)
    dataset.PhotometricInterpretation = "MONOCHROME2"
    assert np.array_equal(grey_radiograph(dataset, "RG3"), as_stored)


def test_zero_or_missing_pixel_spacing_is_refused_or_uses_the_logged_fallback(caplog, pydicom_file):
    chest = pydicom.dcmread(pydicom_file("RG1_UNCR.dcm"))  # PixelSpacing 0\0
    assert pixel_spacing_mm(chest) == (None, "PixelSpacing 0.000\\0.000 is not a usable spacing")
    with pytest.raises(InputError, match=r"PixelSpacing 0.000\\0.000 is not a usable spacing"):
        dicom_knee_crops("RG1", "R", 60.0, 32, dataset=chest)
    extremity = pydicom.dcmread(pydicom_file("RG3_UNCR.dcm"))  # no spacing at all
    with pytest.raises(InputError, match="no PixelSpacing or ImagerPixelSpacing: cannot crop"):
        dicom_knee_crops("RG3", "R", 60.0, 32, dataset=extremity)
    with caplog.at_level("WARNING"):
        crops = dicom_knee_crops("RG3", "R", 60.0, 32, spacing_fallback_mm=0.1, dataset=extremity)
    assert crops["R"].shape == (32, 32) and crops["R"].dtype == np.uint8
    assert "RG3: no PixelSpacing or ImagerPixelSpacing; using ingest.oai_pixel_spacing_mm" in (
        caplog.text
    )


def radiograph_dataset(pixels: np.ndarray, spacing_mm: float, keyword="ImagerPixelSpacing"):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    setattr(ds, keyword, [spacing_mm, spacing_mm])
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def test_detectors_of_different_pixel_size_give_crops_of_the_same_anatomy():
    """One knee on a 0.1 mm and a 0.2 mm detector: the crops in millimetres agree."""
    y, x = np.mgrid[:1000, :1000] * 0.1  # mm
    anatomy = 1000 + 2000 * (np.hypot(x - 45, y - 55) < 15) + 8 * x  # a disc off centre
    fine = radiograph_dataset(anatomy, 0.1)
    coarse = radiograph_dataset(anatomy.reshape(500, 2, 500, 2).mean(axis=(1, 3)), 0.2)
    a = dicom_knee_crops("fine", "R", 60.0, 48, dataset=fine)["R"].astype(float)
    b = dicom_knee_crops("coarse", "R", 60.0, 48, dataset=coarse)["R"].astype(float)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
    assert np.abs(a - b).mean() < 6
    # the disc (15 mm radius) covers the same part of both crops
    assert abs((a > 200).mean() - (b > 200).mean()) < 0.02
    assert 0.1 < (a > 200).mean() < 0.4


def test_a_crop_larger_than_the_image_is_refused():
    small = radiograph_dataset(np.full((100, 100), 1000), 0.5, keyword="PixelSpacing")
    with pytest.raises(InputError, match=r"50 x 50 mm .* does not hold the 60 mm crop"):
        dicom_knee_crops("small", "L", 60.0, 32, dataset=small)
