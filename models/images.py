"""Turn untrusted image references into RGB Pillow images, or fail with a clear reason.

Every check here exists because an event producer can send anything: oversized payloads,
truncated files, decompression bombs, paths that escape the image folder.
"""
import base64
import binascii
import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError


class BadImage(ValueError):
    """The image cannot be used; the message says why and goes to the dead-letter topic."""


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    if len(data) > max_bytes:
        raise BadImage(f"image is {len(data)} bytes, limit is {max_bytes}")
    if not data:
        raise BadImage("image is empty")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; we want a hard limit.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise BadImage(f"image is {width}x{height} = {width * height} pixels, limit is {max_pixels}")
            image.load()
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not a decodable image (unknown or corrupt format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadImage(f"decompression bomb refused: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt data
        raise BadImage(f"corrupt image: {error}") from None
    return image.convert("RGB")


def decode_base64(text: str, *, max_bytes: int) -> bytes:
    # base64 inflates by 4/3: reject before decoding a huge string
    if len(text) > max_bytes * 4 // 3 + 4:
        raise BadImage(f"image_b64 is {len(text)} characters, limit is {max_bytes} bytes decoded")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise BadImage(f"image_b64 is not valid base64: {error}") from None


def read_confined(path: str, root: Path, *, max_bytes: int) -> bytes:
    """Read ``path`` (relative to ``root``, or absolute inside it) without escaping ``root``."""
    root = root.resolve()
    candidate = (root / path).resolve()
    if not candidate.is_relative_to(root):
        raise BadImage(f"image_path {path!r} is outside the image root")
    if not candidate.is_file():
        raise BadImage(f"image_path {path!r} does not exist")
    size = candidate.stat().st_size
    if size > max_bytes:
        raise BadImage(f"image is {size} bytes, limit is {max_bytes}")
    return candidate.read_bytes()


def load_image_ref(image_b64: str | None, image_path: str | None, *, root: Path,
                   max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode an event's image, given inline as base64 or as a path below ``root``."""
    if image_b64 is not None:
        data = decode_base64(image_b64, max_bytes=max_bytes)
    elif image_path is not None:
        data = read_confined(image_path, root, max_bytes=max_bytes)
    else:
        raise BadImage("no image given")
    return decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)


def thumbnail_png(image: Image.Image, size: int = 96) -> bytes:
    small = image.copy()
    small.thumbnail((size, size))
    # Tiny catalog images (Fashion-MNIST is 28 px) are scaled up so result pages can show them.
    if max(small.size) < size:
        scale = size / max(small.size)
        small = small.resize((round(small.width * scale), round(small.height * scale)), Image.Resampling.NEAREST)
    return encode_png(small)


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
