"""The pickup QR code as a PNG image (what the message carries and the purchaser page shows)."""

from __future__ import annotations

import io

import qrcode
from qrcode.constants import ERROR_CORRECT_M

QR_BOX_PX = 8  # a 43-character token makes a 33x33 module code: about 330 px with the border
QR_BORDER_MODULES = 4  # the quiet zone the QR standard asks for; scanners need it


def qr_png(text: str) -> bytes:
    """A PNG of `text`, error correction M (15 %): survives a scratched phone screen."""
    code = qrcode.QRCode(
        error_correction=ERROR_CORRECT_M, box_size=QR_BOX_PX, border=QR_BORDER_MODULES
    )
    code.add_data(text)
    code.make(fit=True)
    out = io.BytesIO()
    code.make_image().save(out)
    return out.getvalue()
