"""Reading one request for `clipedge serve`: the body under a byte limit, JSON, an uploaded image, form fields.

Kept apart from the routes (clipedge.runtime.serve.app) so each rule a client can break is in one place and gives one
`ApiError` with the HTTP status and a sentence that says what to send instead. Imports starlette: only the server
imports this module.
"""

from __future__ import annotations

import io
import json
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from clipedge.runtime.serve.limits import Limits

__all__ = ["ApiError", "read_body", "read_json", "read_image_request", "form_or_query"]

# how much more than the limit an oversize body is read (and dropped) so that the client, still sending, gets the 413
# rather than a reset connection; past this the connection is closed
_DRAIN_FACTOR = 8
IMAGE_FIELD = "image"


class ApiError(Exception):
    """A request the server refuses: `status` and the message sent as {"error": message}."""

    def __init__(self, status: int, message: str, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close  # the body was not read to its end: the connection cannot carry another request


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_body(request: Request, limit: int, flag: str = "--max-upload-mb") -> bytes:
    """The whole body, or 413 as soon as it is over `limit` bytes: by its Content-Length before reading anything,
    else while it streams in (chunked uploads have none). Never holds more than `limit` bytes."""
    declared = request.headers.get("content-length")
    too_big = f"over the server's limit of {limit} bytes ({flag})"
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > limit:
            raise ApiError(413, f"request body of {int(declared)} bytes is {too_big}",
                           close=not await _drain(request, limit * _DRAIN_FACTOR))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is {too_big}", close=not await _drain(request, limit * _DRAIN_FACTOR))
        chunks.append(chunk)
    return b"".join(chunks)


async def _drain(request: Request, budget: int) -> bool:
    """Read and drop the rest of an oversize body, up to `budget` bytes: True when it ended within that."""
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > budget:
                return False
    except Exception:  # noqa: BLE001 (the client went away, or the stream was already read: nothing to drain)
        return False
    return True


async def read_json(request: Request, limits: Limits) -> dict[str, Any]:
    """A JSON object body: 415 unless the Content-Type says JSON, 400 when it does not parse or is not an object."""
    kind = media_type(request)
    if kind != "application/json" and not kind.endswith("+json"):
        raise ApiError(415, f"this endpoint takes a JSON body with Content-Type: application/json, got "
                            f"{kind or 'no Content-Type'}")
    body = await read_body(request, limits.max_json_bytes, "max_json_bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the body is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ApiError(400, f"the body must be a JSON object, got {type(data).__name__}")
    return data


def _replayed(request: Request, body: bytes) -> Request:
    """A Request over the same scope whose body is `body`, already read under the limit, for starlette's parser."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


async def read_image_request(request: Request, limits: Limits, fields: int = 8) -> tuple[bytes, dict[str, list[str]]]:
    """An image from a multipart upload (field "image") or the raw body with an image/* Content-Type, and the
    other form fields (a raw body has none: the query string carries them). 415 for any other Content-Type."""
    kind = media_type(request)
    if kind.startswith("image/") or kind == "application/octet-stream":
        return await read_body(request, limits.max_upload_bytes), {}
    if kind != "multipart/form-data":
        raise ApiError(415, f"send the image as multipart/form-data (file field {IMAGE_FIELD!r}) or as the raw body "
                            f"with an image/* Content-Type, got {kind or 'no Content-Type'}")
    body = await read_body(request, limits.max_upload_bytes)
    form = await _replayed(request, body).form(max_files=1, max_fields=fields, max_part_size=limits.max_upload_bytes)
    try:
        upload = form.get(IMAGE_FIELD)
        if not isinstance(upload, UploadFile):
            raise ApiError(400, f"the multipart form has no file field {IMAGE_FIELD!r} "
                                f"(curl -F {IMAGE_FIELD}=@photo.jpg)")
        data = await upload.read()
        values: dict[str, list[str]] = {}
        for key, value in form.multi_items():
            if isinstance(value, str):
                values.setdefault(key, []).append(value)
        return data, values
    finally:
        await form.close()


def form_or_query(request: Request, fields: dict[str, list[str]], name: str) -> list[str]:
    """A field's values from the multipart form, else from the query string (for raw image bodies)."""
    return fields.get(name) or request.query_params.getlist(name)


def check_image(data: bytes, limits: Limits) -> None:
    """422 for bytes Pillow cannot identify, 413 for an image with more pixels than allowed: both from the header
    alone, before any pixel is decoded (a decompression bomb never gets to allocate)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ApiError(400, "the image is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as err:
        raise ApiError(413, f"image is over Pillow's decompression-bomb limit: {err}") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ApiError(422, f"the upload is not an image Pillow can read ({type(err).__name__})") from err
    if width * height > limits.max_pixels:
        raise ApiError(413, f"image is {width} x {height} = {width * height} pixels, over the server's limit of "
                            f"{limits.max_pixels} (--max-pixels)")
