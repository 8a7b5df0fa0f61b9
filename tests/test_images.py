import base64
import io

import pytest
from PIL import Image

from models.images import BadImage, decode_image, load_image_ref

LIMITS = {"max_bytes": 1_000_000, "max_pixels": 4_000_000}


def png(width=32, height=32, mode="L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def test_decodes_to_rgb():
    image = decode_image(png(mode="L"), **LIMITS)
    assert image.mode == "RGB" and image.size == (32, 32)


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"hello world", "not a decodable image"),
    (png()[:60], "corrupt image"),
    (b"x" * 1_000_001, "limit is 1000000"),
])
def test_rejects_bad_bytes_with_a_reason(data, reason):
    with pytest.raises(BadImage, match=reason):
        decode_image(data, **LIMITS)


def test_refuses_decompression_bombs_before_decoding():
    bomb = png(5000, 5000)  # compresses to a few KB, decodes to 25 megapixels
    assert len(bomb) < 100_000
    with pytest.raises(BadImage, match="pixels, limit is 4000000"):
        decode_image(bomb, **LIMITS)


def test_paths_stay_inside_the_image_root(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "shoe.png").write_bytes(png())
    (tmp_path / "secret.png").write_bytes(png())
    assert load_image_ref(None, "shoe.png", root=root, **LIMITS).size == (32, 32)
    for escape in ("../secret.png", str(tmp_path / "secret.png"), "sub/../../secret.png"):
        with pytest.raises(BadImage, match="outside the image root"):
            load_image_ref(None, escape, root=root, **LIMITS)
    with pytest.raises(BadImage, match="does not exist"):
        load_image_ref(None, "missing.png", root=root, **LIMITS)


def test_base64_must_be_valid_and_small():
    assert load_image_ref(base64.b64encode(png()).decode(), None, root=".", **LIMITS).mode == "RGB"
    with pytest.raises(BadImage, match="not valid base64"):
        load_image_ref("@@@", None, root=".", **LIMITS)
    with pytest.raises(BadImage, match="characters, limit"):
        load_image_ref("A" * 2_000_000, None, root=".", **LIMITS)
