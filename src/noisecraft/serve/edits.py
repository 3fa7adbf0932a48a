"""The body of POST /api/edit: JSON with base64 images, or multipart/form-data with image files; either way the
request fields are checked by `EditRequest` and the image bytes are decoded later by `noisecraft.editing` (which
refuses what is not a single, whole, reasonably sized image)."""
from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from noisecraft.errors import UserError
from noisecraft.serve.paths import resolve_under
from noisecraft.serve.schemas import EditRequest

FILE_FIELDS = ("image", "mask")
EDIT_OPENAPI = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/EditRequest"}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "image": {"type": "string", "format": "binary"}, "mask": {"type": "string", "format": "binary"}},
        "description": "the fields of EditRequest as form fields, the image and mask as files"}}}}}


async def read_edit(request: Request, runs_root: Path) -> tuple[EditRequest, bytes, bytes | None]:
    """(the checked fields, the image's bytes, the mask's bytes or None)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        fields, files = await _form(request)
    elif kind in ("application/json", ""):
        try:
            fields, files = json.loads(await request.body()), {}
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"the body is not JSON: {e}") from None
        if not isinstance(fields, dict):
            raise UserError("the body must be a JSON object (EditRequest)")
    else:
        raise HTTPException(415, f"send application/json or multipart/form-data, not {kind}")
    try:
        body = EditRequest.model_validate(fields)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None
    image = files.get("image") or _decode(body.image, "image")
    if body.image_path is not None:
        if image is not None:
            raise UserError("give the image or image_path, not both")
        image = _under_runs(body.image_path, runs_root)
    if image is None:
        raise UserError("give the image to edit (image: base64 or a file; or image_path under --runs)")
    return body, image, files.get("mask") or _decode(body.mask, "mask")


async def _form(request: Request) -> tuple[dict, dict[str, bytes]]:
    """Form fields as EditRequest values (numbers parsed by pydantic), and the image and mask files' bytes."""
    form = await request.form()
    fields, files = {}, {}
    for key, value in form.multi_items():
        if hasattr(value, "read"):  # an uploaded file
            if key not in FILE_FIELDS:
                raise UserError(f"unexpected file field '{key}': only {', '.join(FILE_FIELDS)} take files")
            files[key] = await value.read()
        elif value != "":
            fields[key] = value
    return fields, files


def _decode(text: str | None, name: str) -> bytes | None:
    """base64, or a data: URL holding base64, -> bytes."""
    if text is None:
        return None
    payload = text.split(",", 1)[1] if text.startswith("data:") and "," in text else text
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"{name} is not base64 (nor a data: URL holding base64)") from None


def _under_runs(rel: str, runs_root: Path) -> bytes:
    path = resolve_under(runs_root, rel)
    if path is None or not path.is_file():
        raise HTTPException(404, f"no image file '{rel[:200]}' under the runs folder")
    return path.read_bytes()
