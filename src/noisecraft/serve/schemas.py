"""Request bodies of the HTTP API. Pydantic checks types and absolute bounds (422 with the field and the reason);
the server's configured limits (`Limits`) are checked by the routes with a message naming the limit."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class Limits:
    max_n: int = 16  # images per request
    max_steps: int = 1000  # sampler steps (DDPM walks the schedule's 1000)
    max_prompt: int = 500  # characters of a prompt or negative prompt
    max_body: int = 64 * 1024  # bytes of a request body
    max_edit_body: int = 8 * 1024 * 1024  # bytes of a POST /api/edit body (it carries an image and a mask)
    max_train_steps: int = 10_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelled field is an error, not silently ignored


class GenerateRequest(_Strict):
    model: str = Field(min_length=1, max_length=512, description="a run's name under --runs (GET /api/models)")
    class_index: int | None = Field(None, ge=0, le=1_000_000, description="class of a class-conditional model; "
                                    "null: all classes in turn")
    prompt: str | None = Field(None, max_length=100_000, description="text models: what to draw")
    negative_prompt: str | None = Field(None, max_length=100_000, description="text models: what to steer away from")
    sampler: str | None = Field(None, max_length=64, description="null: the model's default (GET /api/options)")
    steps: int | None = Field(None, ge=1, le=1_000_000, description="null: the model's default")
    guidance: float | None = Field(None, ge=-100, le=100, allow_inf_nan=False,
                                   description="classifier-free guidance weight w (0 = off); null: the model's")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="image i uses seed + i; null: a random seed")
    n: int = Field(1, ge=1, le=1_000_000, description="number of images")
    loras: dict[str, Annotated[float, Field(ge=-2, le=2, allow_inf_nan=False)]] = Field(
        default_factory=dict, max_length=16, description="LoRA adapters by name (GET /api/models lists each "
        "model's `loras`) and their scales in [-2, 2]; text prompts may also say <lora:name:scale>")


class EditRequest(GenerateRequest):
    image: str | None = Field(None, max_length=12_000_000, description="the image to edit: a PNG/JPEG/WebP as "
                              "base64 or a data: URL (multipart: a file field)")
    image_path: str | None = Field(None, max_length=1024, description="or an image file under --runs, e.g. a run's "
                                   "sample grid")
    mask: str | None = Field(None, max_length=12_000_000, description="inpainting: a mask image of the image's size "
                             "(white or opaque = regenerate), base64 or a data: URL; null: img2img")
    strength: float | None = Field(None, gt=0, le=1, allow_inf_nan=False, description="how far down the noise "
                                   "levels the image goes (1 = from pure noise); null: 0.6, or 1 with a mask")
    jumps: int | None = Field(None, ge=0, le=20, description="inpainting: RePaint resamplings per step; null: the "
                              "measured default")


class GridRequest(GenerateRequest):
    x: str | None = Field(None, max_length=4000, description="the x axis, NAME=VALUES (e.g. steps=5,10,20; ranges "
                          "1-5, 1-10 (+2), 1-4 [4]); names: GET /api/options grid_axes")
    y: str | None = Field(None, max_length=4000, description="the y axis, NAME=VALUES")
    z: str | None = Field(None, max_length=4000, description="the z axis, NAME=VALUES")
    n: int = Field(4, ge=1, le=1_000_000, description="images per cell")


class TrainBody(_Strict):
    name: str = Field(min_length=1, max_length=64, description="the new run's directory under --runs")
    preset: str = Field("digits", max_length=64)
    dataset: str | None = Field(None, max_length=64, description="null: the preset's dataset")
    data_dir: str | None = Field(None, max_length=1024, description="a folder under the server's data root")
    steps: int | None = Field(None, ge=1, le=Limits.max_train_steps)
    overrides: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=64,
                                                           description='config fields, e.g. {"train.lr": "1e-3"}')


class ResumeBody(_Strict):
    steps: int | None = Field(None, ge=1, le=Limits.max_train_steps, description="null: the run's own total")
