"""The one radiograph reader: PNG (8- and 16-bit, grey, RGB, palette), JPEG and DICOM.

Every stage that reads a radiograph reads it here (the OAI ingest, the study B generators and
FID, the KL classifiers, the memorisation, realism and reader-study checks), with one
intensity rule:

    a stored value ``v`` of a ``b``-bit sample reads as ``v / (2**b - 1)``, in [0, 1].

So 8-bit PNG/JPEG values are divided by 255 and 16-bit PNG values by 65535 (PNG's own rule:
a 12-bit image saved as 16-bit PNG is scaled to the full 16 bits, ``sBIT`` says how many were
significant), and an 8-bit image saved again as 16-bit (``v * 257``) reads identically.
Colour and palette images become grey with ITU-R 601-2 luma (PIL's ``convert("L")``), on
8 bits. Resizing is bilinear (PIL, antialiased when shrinking), on the [0, 1] floats.

DICOM radiographs (raw OAI) are decoded by pydicom, with every transfer syntax it can decode:
JPEG Lossless, JPEG-LS, 12-bit JPEG Extended, JPEG 2000 and RLE need the optional decoders
(``pip install -e ".[dicom]"``: pylibjpeg and its plugins), and the error says so when they
are missing. MONOCHROME1 is inverted (bone bright); a knee crop is a square of a given side in
millimetres, from ``PixelSpacing`` or ``ImagerPixelSpacing``, windowed to its 0.5-99.5
percentiles: the stored bit depth does not matter there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kneesynth.errors import InputError

log = logging.getLogger(__name__)

#: PIL modes of 16-bit grey images (PNG); "I" is how older Pillow versions open them.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
#: PIL modes converted to 8-bit grey (``convert("L")``) before scaling.
EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
#: Windowing of DICOM knee crops: percentiles that map to 0 and 1.
WINDOW_PERCENTILES = (0.5, 99.5)
#: The optional extra that installs pydicom's decoders of compressed pixel data.
DICOM_EXTRA = 'pip install -e ".[dicom]"'


def _size_hw(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    return int(size[0]), int(size[1])


def resize(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """float32 ``(H, W)`` -> ``size`` = (H, W) (or one int for a square), bilinear (PIL)."""
    from PIL import Image  # heavy (PIL): imported on use

    height, width = _size_hw(size)
    if image.shape == (height, width):
        return np.asarray(image, dtype=np.float32)
    resized = Image.fromarray(np.asarray(image, dtype=np.float32), mode="F").resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def read_radiograph(
    path: str | os.PathLike[str], size: int | tuple[int, int] | None = None
) -> np.ndarray:
    """One PNG/JPEG radiograph as float32 ``(H, W)`` in [0, 1] (the module's intensity rule).

    ``size`` = (H, W), or one int for a square, resizes (bilinear). Raises
    :class:`InputError` naming the file for a missing, unreadable, truncated or unsupported
    image.
    """
    from PIL import Image, UnidentifiedImageError  # heavy (PIL): imported on use

    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in SIXTEEN_BIT_MODES:
                stored = np.asarray(image)
                if stored.size and (stored.min() < 0 or stored.max() > 65535):
                    raise InputError(
                        path, f"{mode} image with values outside 0-65535 (not a 16-bit PNG)"
                    )
                array = stored.astype(np.float32) / np.float32(65535)
            elif mode in EIGHT_BIT_MODES:
                grey = image if mode == "L" else image.convert("L")
                array = np.asarray(grey, dtype=np.float32) / np.float32(255)
            else:
                raise InputError(
                    path, f"unsupported image mode {mode} (expected 8- or 16-bit grey, RGB)"
                )
    except FileNotFoundError:
        raise InputError(path, "image file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise InputError(path, f"cannot read image ({' '.join(str(error).split())})") from None
    if array.ndim != 2:
        raise InputError(path, f"expected a grey image, got shape {array.shape}")
    return resize(array, size) if size is not None else array


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 (``round(255 v)``): exact for values read from 8-bit images."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def load_images(paths: Sequence[str | os.PathLike[str]], image_size: int) -> np.ndarray:
    """Read radiographs into ``(n, image_size, image_size)`` uint8 (:func:`read_radiograph`:
    8/16-bit, RGB, one intensity rule; bilinear resize if needed)."""
    images = np.empty((len(paths), image_size, image_size), dtype=np.uint8)
    for index, path in enumerate(paths):
        images[index] = to_uint8(read_radiograph(path, image_size))
    return images


class ImageFiles:
    """Image files read lazily: ``files[a:b]`` -> float32 ``(b - a, H, W)`` in [0, 1].

    ``size`` = (H, W) resizes every image (bilinear); without it, the first image's size is used
    and an image of another size is an :class:`InputError`.
    """

    def __init__(
        self, paths: Sequence[str | os.PathLike[str]], size: tuple[int, int] | None = None
    ):
        self.paths = [Path(p) for p in paths]
        self._size = tuple(size) if size is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of every image returned."""
        if self._size is None:
            if not self.paths:
                raise ValueError("ImageFiles: no images")
            self._size = read_radiograph(self.paths[0]).shape
        return self._size  # type: ignore[return-value]

    def __getitem__(self, index: slice | int) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self[int(index) : int(index) + 1][0]
        paths = self.paths[index]
        out = np.empty((len(paths), *self.size), dtype=np.float32)
        for i, path in enumerate(paths):
            image = read_radiograph(path, self._size)
            if image.shape != tuple(self.size):
                raise InputError(
                    path,
                    f"image is {image.shape[0]}x{image.shape[1]}, expected {self.size[0]}x{self.size[1]}",
                )
            out[i] = image
        return out


def check_radiograph(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Decode one PNG/JPEG completely (a truncated file fails here); return its (H, W)."""
    return read_radiograph(path).shape


# --------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------
def read_dicom(path: str | os.PathLike[str], stop_before_pixels: bool = False):
    """``pydicom.dcmread`` with one-line errors naming the file."""
    import pydicom  # heavy (pydicom): imported on use

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except pydicom.errors.InvalidDicomError:
        raise InputError(path, "not a DICOM file (no DICM preamble)") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as error:
        detail = " ".join(str(error).split())[:160]
        raise InputError(
            path, f"cannot read the DICOM file (truncated or corrupt?): {detail}"
        ) from None


def transfer_syntax(dataset) -> Any:
    """The dataset's transfer syntax UID (pydicom ``UID``), or None."""
    meta = getattr(dataset, "file_meta", None)
    return meta.get("TransferSyntaxUID") if meta is not None else None


def dicom_pixel_array(dataset, path: str | os.PathLike[str]) -> np.ndarray:
    """The decoded pixel data of a DICOM dataset, with one-line errors naming the file.

    Compressed pixel data that no installed decoder reads names the optional extra
    (:data:`DICOM_EXTRA`); truncated pixel data says so.
    """
    if "PixelData" not in dataset:
        raise InputError(path, "no pixel data (not an image)")
    syntax = transfer_syntax(dataset)
    try:
        return dataset.pixel_array
    except Exception as error:  # pydicom and its plugins raise many types
        detail = " ".join(str(error).split())
        name = f"{syntax.name} ({syntax})" if syntax is not None else "unknown transfer syntax"
        if syntax is not None and syntax.is_compressed:
            from pydicom.pixels import get_decoder  # heavy (pydicom): imported on use

            try:
                decoder = get_decoder(syntax)
            except NotImplementedError:
                raise InputError(
                    path, f"pixel data compressed as {name}, which pydicom cannot decode"
                ) from None
            if "pylibjpeg" not in decoder.available_plugins and "gdcm" not in (
                decoder.available_plugins
            ):
                tried = f" ({detail[:120]})" if decoder.is_available else ""
                raise InputError(
                    path,
                    f"pixel data compressed as {name}: no installed decoder reads it{tried}; "
                    f"install the optional DICOM decoders with {DICOM_EXTRA} (pylibjpeg and "
                    "its plugins)",
                ) from None
        if "less than expected" in detail or "truncat" in detail.lower():
            raise InputError(path, f"pixel data is truncated ({detail[:160]})") from None
        raise InputError(path, f"cannot decode the pixel data ({name}): {detail[:160]}") from None


def grey_radiograph(dataset, path: str | os.PathLike[str]) -> np.ndarray:
    """A DICOM radiograph's pixels as float32 ``(rows, cols)`` with bone bright.

    MONOCHROME1 (bright = low attenuation) is inverted; colour and multi-frame images are
    refused.
    """
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(path, f"expected a grey radiograph, got {photometric} pixels")
    if frames > 1:
        raise InputError(path, f"expected one radiograph, got {frames} frames")
    pixels = dicom_pixel_array(dataset, path).astype(np.float32)
    if pixels.ndim != 2:
        raise InputError(path, f"expected a 2D grey radiograph, got pixel array {pixels.shape}")
    if photometric == "MONOCHROME1":
        pixels = pixels.max() + pixels.min() - pixels
    return pixels


def pixel_spacing_mm(dataset) -> tuple[tuple[float, float] | None, str]:
    """(row, column) spacing in mm and the attribute it came from, or (None, why not).

    ``PixelSpacing`` (calibrated to the patient, if given) comes first, then
    ``ImagerPixelSpacing`` (at the detector). A missing, malformed or zero value is not used.
    """
    problems = []
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = dataset.get(keyword)
        if value is None or value == "":
            continue
        items = [value] if isinstance(value, (str, bytes, int, float)) else list(value)
        try:
            values = [float(v) for v in items]
        except (TypeError, ValueError):
            values = []
        if len(values) == 2 and all(np.isfinite(v) and v > 0 for v in values):
            return (values[0], values[1]), keyword
        shown = "\\".join(str(v) for v in items)
        problems.append(f"{keyword} {shown} is not a usable spacing")
    if not problems:
        return None, "no PixelSpacing or ImagerPixelSpacing"
    return None, "; ".join(problems)


def knee_crop(
    half: np.ndarray,
    spacing_mm: tuple[float, float],
    crop_mm: float,
    image_size: int,
    path: str | os.PathLike[str],
) -> np.ndarray:
    """A centred square of ``crop_mm`` of one knee's image, windowed, as uint8 ``image_size``².

    ``spacing_mm`` is (row, column); unequal spacings give a rectangle of pixels that is square
    in millimetres. The crop is windowed to :data:`WINDOW_PERCENTILES` and resized (bilinear).
    """
    height, width = half.shape
    rows = int(round(crop_mm / spacing_mm[0]))
    cols = int(round(crop_mm / spacing_mm[1]))
    if rows > height or cols > width or rows < 2 or cols < 2:
        raise InputError(
            path,
            f"the knee's image is {height * spacing_mm[0]:.0f} x {width * spacing_mm[1]:.0f} mm "
            f"({height} x {width} pixels of {spacing_mm[0]:g} x {spacing_mm[1]:g} mm): it does "
            f"not hold the {crop_mm:g} mm crop (ingest.oai_crop_mm)",
        )
    top, left = (height - rows) // 2, (width - cols) // 2
    crop = half[top : top + rows, left : left + cols]
    low, high = np.percentile(crop, WINDOW_PERCENTILES)
    scaled = np.clip((crop - low) / max(float(high - low), 1e-6), 0.0, 1.0)
    return to_uint8(resize(scaled.astype(np.float32), image_size))


def dicom_knee_crops(
    path: str | os.PathLike[str],
    laterality: str,
    crop_mm: float,
    image_size: int,
    spacing_fallback_mm: float | None = None,
    dataset=None,
) -> dict[str, np.ndarray]:
    """8-bit square crops ``{side: (image_size, image_size) uint8}`` of one knee radiograph.

    ``laterality`` ``R``/``L``: one knee, the whole image; ``B``: a bilateral PA view, split
    down the middle, the patient's right knee on the image's left half (radiographs are viewed
    facing the patient). Each crop is ``crop_mm`` square, centred. Without a usable
    (Imager)PixelSpacing the radiograph is refused, unless ``spacing_fallback_mm`` is given:
    then that spacing is used and logged.
    """
    dataset = read_dicom(path) if dataset is None else dataset
    spacing, source = pixel_spacing_mm(dataset)
    if spacing is None:
        if not spacing_fallback_mm:
            raise InputError(
                path,
                f"{source}: cannot crop {crop_mm:g} mm (set ingest.oai_pixel_spacing_mm to use "
                "a fixed spacing for such files)",
            )
        spacing = (float(spacing_fallback_mm), float(spacing_fallback_mm))
        log.warning(
            "%s: %s; using ingest.oai_pixel_spacing_mm = %g mm", path, source, spacing_fallback_mm
        )
    pixels = grey_radiograph(dataset, path)
    width = pixels.shape[1]
    halves = (
        {laterality: pixels}
        if laterality in ("R", "L")
        else {"R": pixels[:, : width // 2], "L": pixels[:, width // 2 :]}
    )
    return {
        side: knee_crop(half, spacing, crop_mm, image_size, path) for side, half in halves.items()
    }
