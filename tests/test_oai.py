"""OAI radiographs -> manifest: Chen layout, raw DICOM + KL tables, splits, bad input."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kneesynth.data.oai import ingest_oai, parse_image_id, read_chen_layout
from kneesynth.data.oai_raw import (
    build_raw_manifest,
    crop_oai_batch,
    oai_batches,
    read_kl_table,
    read_kl_tables,
    series_matches,
)
from kneesynth.errors import InputError

INGEST_CFG = {
    "oai_image_size": 32,
    "oai_crop_mm": 28.0,
    "oai_pixel_spacing_mm": None,
    "input_checks": "strict",
    "oai_series_keyword": "fixed flexion",
    "oai_missing_kl": "error",
    "oai_readprj_priority": [15, 37],
}
SPLITS_CFG = {"oai_mode": "participant", "oai_fractions": [0.6, 0.2, 0.2]}
KL_HEADER = "ID|SIDE|READPRJ|VERSION|V00XRKL|V00XRJSM\n"


def png(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8), mode="L").save(path)
    return path


def chen_folder(root, participants=10):
    for i in range(participants):
        for side in "RL":
            split = ("train", "val", "test")[i % 3]
            png(root / split / str((i + (side == "L")) % 5) / f"{9000100 + i}{side}.png")
    return root


def test_parse_image_id():
    assert parse_image_id("9000001L") == ("9000001", "L", "")
    assert parse_image_id("9000001R_v03") == ("9000001", "R", "V03")
    assert parse_image_id("knee_17") == ("knee_17", "", "")


def test_chen_layout_to_manifest(tmp_path):
    manifest = read_chen_layout(chen_folder(tmp_path / "oai"))
    assert list(manifest.columns) == ["image", "participant", "side", "visit", "kl_grade", "split"]
    assert len(manifest) == 20
    row = manifest[manifest["image"].str.endswith("9000101L.png")].iloc[0]
    assert (row.participant, row.side, row.kl_grade, row.split) == ("9000101", "L", 2, "val")


def test_ingest_oai_writes_manifest_and_participant_split(tmp_path):
    root = chen_folder(tmp_path / "oai", participants=30)
    ingest_oai(
        root,
        "chen",
        tmp_path / "manifest.tsv",
        tmp_path / "participants.tsv",
        INGEST_CFG,
        SPLITS_CFG,
        seed=0,
    )
    manifest = pd.read_csv(tmp_path / "manifest.tsv", sep="\t", dtype={"participant": str})
    participants = pd.read_csv(tmp_path / "participants.tsv", sep="\t", dtype={"participant": str})
    assert len(manifest) == 60
    assert participants["participant"].is_unique and len(participants) == 30
    assert (
        manifest.groupby("participant")["split"].nunique() == 1
    ).all()  # no participant in two splits
    assert participants["split"].value_counts().to_dict() == {"train": 18, "val": 6, "test": 6}


def test_folder_mode_keeps_chen_split_and_warns_on_leaks(tmp_path, caplog):
    root = chen_folder(tmp_path / "oai", participants=3)
    png(root / "test" / "0" / "9000100L_v01.png")  # participant 9000100 is also in train
    ingest_oai(
        root,
        "chen",
        tmp_path / "m.tsv",
        tmp_path / "p.tsv",
        INGEST_CFG,
        {**SPLITS_CFG, "oai_mode": "folder"},
        seed=0,
    )
    manifest = pd.read_csv(tmp_path / "m.tsv", sep="\t", dtype={"participant": str})
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert any("LEAKS" in record.getMessage() for record in caplog.records)


def test_chen_layout_with_a_non_grade_subfolder_is_an_error(tmp_path):
    root = chen_folder(tmp_path / "oai")
    png(root / "train" / "5" / "9000999L.png")
    with pytest.raises(InputError, match=r"train/5: not a KL grade folder '5'"):
        read_chen_layout(root)


def test_chen_layout_with_an_unknown_split_folder_is_an_error(tmp_path):
    root = chen_folder(tmp_path / "oai")
    png(root / "auto_test" / "0" / "9000999L.png")
    with pytest.raises(InputError, match="auto_test: unknown split folder"):
        read_chen_layout(root)


def test_chen_layout_with_a_non_image_file_is_an_error(tmp_path):
    root = chen_folder(tmp_path / "oai")
    (root / "train" / "0" / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=r"train/0/notes.txt: not an image file"):
        read_chen_layout(root)


def test_chen_layout_with_a_fake_png_is_an_error(tmp_path):
    root = chen_folder(tmp_path / "oai")
    (root / "train" / "0" / "9000998R.png").write_text("not really a png")
    with pytest.raises(InputError, match="9000998R.png: not a PNG image"):
        read_chen_layout(root)


def test_duplicate_image_ids_are_an_error(tmp_path):
    root = chen_folder(tmp_path / "oai")
    png(root / "test" / "4" / "9000100R.png")  # 9000100R is already in train
    with pytest.raises(InputError, match="duplicate image ID '9000100R'"):
        read_chen_layout(root)


def test_empty_chen_folder_is_an_error_and_nothing_is_written(tmp_path):
    (tmp_path / "oai" / "train" / "0").mkdir(parents=True)
    with pytest.raises(InputError, match="no images"):
        ingest_oai(
            tmp_path / "oai",
            "chen",
            tmp_path / "m.tsv",
            tmp_path / "p.tsv",
            INGEST_CFG,
            SPLITS_CFG,
            seed=0,
        )
    assert not (tmp_path / "m.tsv").exists() and not (tmp_path / "p.tsv").exists()


# --------------------------------------------------------------------------------------------
# Raw OAI
# --------------------------------------------------------------------------------------------
def kl_table(path, rows, header=KL_HEADER):
    path.write_text(header + "".join(f"{line}\n" for line in rows))
    return path


def test_kl_table_reads_coded_values(tmp_path):
    path = kl_table(
        tmp_path / "kXR_SQ_BU00.txt", ["9000099|1: Right|15|x|2|1", "9000099|2|15|x|0: 0|0"]
    )
    table = read_kl_table(path)
    assert table[["participant", "side", "visit", "kl_grade"]].values.tolist() == [
        ["9000099", "R", "V00", 2],
        ["9000099", "L", "V00", 0],
    ]


@pytest.mark.parametrize("code", [".", ".A: Not Expected", ".B: Not Applicable", ""])
def test_kl_table_with_missing_codes_is_an_error(tmp_path, code):
    path = kl_table(
        tmp_path / "kXR_SQ_BU00.txt", ["9000099|1|15|x|2|1", f"9000099|2|15|x|{code}|1"]
    )
    with pytest.raises(InputError, match=r"kXR_SQ_BU00.txt: line 3: missing KL grade"):
        read_kl_table(path)


def test_kl_table_missing_codes_can_be_dropped(tmp_path):
    path = kl_table(
        tmp_path / "kXR_SQ_BU00.txt", ["9000099|1|15|x|2|1", "9000099|2|15|x|.A: Not Expected|1"]
    )
    assert len(read_kl_table(path, missing="drop")) == 1


@pytest.mark.parametrize("grade", ["5", "-1", "two"])
def test_kl_table_with_grade_outside_0_to_4_is_an_error(tmp_path, grade):
    path = kl_table(
        tmp_path / "kXR_SQ_BU01.txt",
        [f"9000099|1|15|x|{grade}|1"],
        header="ID|SIDE|READPRJ|VERSION|V01XRKL|V01XRJSM\n",
    )
    with pytest.raises(InputError, match=r"line 2: KL grade .* in V01XRKL is not 0-4"):
        read_kl_table(path, missing="drop")


def test_kl_table_without_kl_column_is_an_error(tmp_path):
    path = kl_table(tmp_path / "k.txt", ["9000099|1"], header="ID|SIDE\n")
    with pytest.raises(InputError, match=r"k.txt: missing column\(s\) V<vv>XRKL"):
        read_kl_table(path)


def test_several_reading_projects_follow_the_priority(tmp_path):
    path = kl_table(
        tmp_path / "kXR_SQ_BU00.txt",
        ["9000099|1|37|x|3|1", "9000099|1|15|x|2|1", "9000099|1|42|x|4|1"],
    )
    assert read_kl_tables([path], readprj_priority=[15, 37])["kl_grade"].tolist() == [2]
    assert read_kl_tables([path], readprj_priority=[37])["kl_grade"].tolist() == [3]
    assert read_kl_tables([path], readprj_priority=[])["kl_grade"].tolist() == [2]  # lowest READPRJ


def write_radiograph(
    path, participant, laterality=None, description="Bilateral PA Fixed Flexion Knee"
):
    """A small bilateral knee radiograph: the right half dark, the left half bright."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.PatientID, ds.Modality, ds.SeriesDescription = participant, "DX", description
    ds.ImagerPixelSpacing = [1.0, 1.0]
    if laterality:
        ds.ImageLaterality = laterality
    pixels = np.zeros((40, 80), dtype=np.uint16)
    pixels[:, :40] = np.linspace(100, 200, 40)[None, :]
    pixels[:, 40:] = np.linspace(2000, 3000, 40)[None, :]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


def raw_oai(root):
    write_radiograph(root / "0.C.2" / "9000099" / "20040101" / "001", "9000099")
    write_radiograph(root / "1.C.2" / "9000099" / "20050101" / "001", "9000099")
    write_radiograph(root / "0.C.2" / "9000100" / "20040101" / "001", "9000100")
    write_radiograph(
        root / "0.C.2" / "9000100" / "20040101" / "002", "9000100", description="PA Hand"
    )
    kl_table(
        root / "kXR_SQ_BU00.txt",
        ["9000099|1|15|x|1|1", "9000099|2|15|x|3|1", "9000100|1|15|x|0|0", "9000100|2|15|x|4|0"],
    )
    kl_table(
        root / "kXR_SQ_BU01.txt",
        ["9000099|1|15|x|2|1", "9000099|2|15|x|.A: Not Expected|1"],
        header="ID|SIDE|READPRJ|VERSION|V01XRKL|V01XRJSM\n",
    )
    return root


def test_raw_oai_dicoms_are_matched_to_kl_grades(tmp_path):
    root = raw_oai(tmp_path / "oai")
    manifest = build_raw_manifest(
        root, [], tmp_path / "images", {**INGEST_CFG, "oai_missing_kl": "drop"}
    )
    keys = {(r.participant, r.side, r.visit): r.kl_grade for r in manifest.itertuples()}
    assert keys == {
        ("9000099", "R", "V00"): 1,
        ("9000099", "L", "V00"): 3,
        ("9000099", "R", "V01"): 2,
        ("9000100", "R", "V00"): 0,
        ("9000100", "L", "V00"): 4,
    }
    right = np.asarray(Image.open(tmp_path / "images" / "0.C.2" / "9000099R_v00.png"))
    left = np.asarray(Image.open(tmp_path / "images" / "0.C.2" / "9000099L_v00.png"))
    assert right.shape == (32, 32) and right.dtype == np.uint8
    # Both halves are windowed separately; the crop comes from the right place (a ramp each).
    assert right[:, -1].mean() > right[:, 0].mean() and left[:, -1].mean() > left[:, 0].mean()


def test_raw_oai_missing_kl_code_stops_by_default(tmp_path):
    root = raw_oai(tmp_path / "oai")
    with pytest.raises(
        InputError, match="kXR_SQ_BU01.txt: line 3: missing KL grade '.A: Not Expected'"
    ):
        ingest_oai(
            root,
            "raw",
            tmp_path / "m.tsv",
            tmp_path / "p.tsv",
            INGEST_CFG,
            SPLITS_CFG,
            seed=0,
            image_dir=tmp_path / "images",
        )
    assert not (tmp_path / "images").exists() and not (tmp_path / "m.tsv").exists()


def test_raw_oai_duplicate_image_ids_are_an_error(tmp_path):
    root = raw_oai(tmp_path / "oai")
    write_radiograph(root / "0.C.2" / "9000099" / "20040102" / "001", "9000099")
    with pytest.raises(InputError, match="duplicate image ID 9000099R_V00"):
        build_raw_manifest(root, [], tmp_path / "images", {**INGEST_CFG, "oai_missing_kl": "drop"})


def test_raw_oai_ingest_writes_everything(tmp_path):
    root = raw_oai(tmp_path / "oai")
    ingest_oai(
        root,
        "raw",
        tmp_path / "m.tsv",
        tmp_path / "p.tsv",
        {**INGEST_CFG, "oai_missing_kl": "drop"},
        SPLITS_CFG,
        seed=0,
        image_dir=tmp_path / "images",
    )
    manifest = pd.read_csv(tmp_path / "m.tsv", sep="\t", dtype={"participant": str})
    assert len(manifest) == 5
    assert all(Path(p).is_file() for p in manifest["image"])
    assert all(str(p).startswith(str(tmp_path / "images")) for p in manifest["image"])


# --------------------------------------------------------------------------------------------
# Raw OAI as it comes: what a file is, series names, spacing, batches
# --------------------------------------------------------------------------------------------
def place(pydicom_file, name, folder, **changes):
    """Copy one of pydicom's real test files into a raw OAI folder, changing some attributes."""
    import pydicom

    dataset = pydicom.dcmread(pydicom_file(name))
    for key, value in changes.items():
        setattr(dataset, key, value)
    folder.mkdir(parents=True, exist_ok=True)
    dataset.save_as(folder / name)
    return folder / name


def test_files_that_are_not_knee_radiographs_are_refused_each_named(tmp_path, pydicom_file, caplog):
    """A CT slice, an MR, an NM image and a chest CR (real files) are not cut into knees."""
    root = tmp_path / "oai"
    for name in ("CT_small.dcm", "MR_small.dcm", "JPEG-LL.dcm", "RG1_UNCR.dcm"):
        place(pydicom_file, name, root / "0.C.2")
    hint = "(set ingest.input_checks: relaxed to use it anyway)"
    expected = [
        f"{root}/0.C.2/CT_small.dcm: Modality CT: not a radiograph (expected CR or DX) {hint}",
        f"{root}/0.C.2/JPEG-LL.dcm: Modality NM: not a radiograph (expected CR or DX) {hint}",
        f"{root}/0.C.2/MR_small.dcm: Modality MR: not a radiograph (expected CR or DX) {hint}",
        f"{root}/0.C.2/RG1_UNCR.dcm: BodyPartExamined CHEST and no series description: not a "
        f"knee radiograph (expected BodyPartExamined KNEE or the series keyword 'fixed "
        f"flexion') {hint}",
    ]
    with caplog.at_level("ERROR"), pytest.raises(InputError) as error:
        crop_oai_batch(root, "0.C.2", tmp_path / "crops" / "0.C.2", INGEST_CFG)
    assert str(error.value) == f"{expected[0]} (and 3 more file(s), each logged above)"
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == expected
    assert not (tmp_path / "crops" / "0.C.2").exists()


def test_relaxed_checks_and_a_spacing_fallback_take_a_poor_header(tmp_path, pydicom_file, caplog):
    """A real CR of the distal tibia (MONOCHROME1, 10 bit, BodyPartExamined EXTREMITY, no
    series description, no pixel spacing)."""
    root = tmp_path / "oai"
    place(pydicom_file, "RG3_UNCR.dcm", root / "0.C.2")
    cfg = {**INGEST_CFG, "oai_crop_mm": 60.0}
    with pytest.raises(InputError, match="BodyPartExamined EXTREMITY and no series description"):
        crop_oai_batch(root, "0.C.2", tmp_path / "crops", cfg)
    cfg["input_checks"] = "relaxed"
    with pytest.raises(
        InputError, match="no PixelSpacing or ImagerPixelSpacing: cannot crop 60 mm"
    ):
        crop_oai_batch(root, "0.C.2", tmp_path / "crops", cfg)
    cfg["oai_pixel_spacing_mm"] = 0.1
    with caplog.at_level("WARNING"):
        table = crop_oai_batch(root, "0.C.2", tmp_path / "crops", cfg)
    assert table["side"].tolist() == ["R"] and table["participant"].tolist() == ["11RG3"]
    assert "used anyway (ingest.input_checks: relaxed)" in caplog.text
    assert "using ingest.oai_pixel_spacing_mm = 0.1 mm" in caplog.text
    crop = np.asarray(Image.open(table["image"].iloc[0]))
    assert crop.shape == (32, 32) and crop.std() > 10


def test_series_keyword_ignores_case_and_punctuation():
    assert series_matches("BILAT PA FIXED-FLEXION KNEE", "fixed flexion")
    assert series_matches("Bilateral_PA_Fixed.Flexion", "FIXED FLEXION")
    assert not series_matches("PA HAND", "fixed flexion")
    assert series_matches("anything", "")


def test_hyphenated_series_is_used_and_an_empty_result_says_what_was_skipped(tmp_path):
    root = tmp_path / "oai"
    write_radiograph(
        root / "0.C.2" / "a" / "001", "9000099", description="BILAT PA FIXED-FLEXION KNEE"
    )
    kl_table(root / "kXR_SQ_BU00.txt", ["9000099|1|15|x|1|1", "9000099|2|15|x|3|1"])
    manifest = build_raw_manifest(root, [], tmp_path / "images", INGEST_CFG)
    assert sorted(manifest["side"]) == ["L", "R"]

    skipped = tmp_path / "skipped"
    write_radiograph(skipped / "0.C.2" / "a" / "001", "9000099", description="PA Hand")
    write_radiograph(skipped / "0.C.2" / "a" / "002", "9000099", description="PA Hand")
    write_radiograph(skipped / "1.C.2" / "a" / "001", "9000099", description="Lateral Knee")
    kl_table(skipped / "kXR_SQ_BU00.txt", ["9000099|1|15|x|1|1"])
    with pytest.raises(InputError) as error:
        build_raw_manifest(skipped, [], tmp_path / "images2", INGEST_CFG)
    assert str(error.value) == (
        f"{skipped}: no OAI knee radiographs (DICOM) found; skipped 3 file(s): 2 x series "
        f"'PA Hand' does not name 'fixed flexion' (e.g. {skipped}/0.C.2/a/001); 1 x series "
        f"'Lateral Knee' does not name 'fixed flexion' (e.g. {skipped}/1.C.2/a/001)"
    )


def test_batches_are_the_visit_folders_and_fail_alone(tmp_path, pydicom_file):
    root = raw_oai(tmp_path / "oai")
    place(pydicom_file, "CT_small.dcm", root / "1.C.2")  # a bad file in visit V01
    place(pydicom_file, "MR_small.dcm", root)  # and one at the top
    assert oai_batches(root) == ["0.C.2", "1.C.2", "_top"]
    good = crop_oai_batch(root, "0.C.2", tmp_path / "crops" / "0.C.2", INGEST_CFG)
    assert len(good) == 4 and (tmp_path / "crops" / "0.C.2" / "radiographs.tsv").is_file()
    with pytest.raises(InputError, match=r"1\.C\.2/CT_small\.dcm: Modality CT"):
        crop_oai_batch(root, "1.C.2", tmp_path / "crops" / "1.C.2", INGEST_CFG)
    with pytest.raises(InputError, match=r"oai/MR_small\.dcm: Modality MR"):
        crop_oai_batch(root, "_top", tmp_path / "crops" / "_top", INGEST_CFG)
    assert (tmp_path / "crops" / "0.C.2" / "9000099R_v00.png").is_file()


def test_every_bad_image_of_a_chen_folder_is_named_in_one_run(tmp_path, caplog):
    root = chen_folder(tmp_path / "oai")
    (root / "train" / "0" / "fake.png").write_text("not a png")
    good = next((root / "val").rglob("*.png"))
    good.write_bytes(good.read_bytes()[:40])  # truncated
    with caplog.at_level("ERROR"), pytest.raises(InputError, match=r"\(and 1 more bad path"):
        read_chen_layout(root)
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(line.startswith(f"{root}/train/0/fake.png: not a PNG image") for line in logged)
    assert any(line.startswith(f"{good}: cannot read image") for line in logged)
