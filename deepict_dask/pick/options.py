"""``PickOptions``: every setting of the pick stage, the one model that config, stage, CLI and API use.

The clustering method is ``method``: a method's own ``Params`` model (see :mod:`.methods`), chosen by
its ``name``. It is looked up in the method registry when the options are built, so a method
registered later (a plugin, a test) is accepted everywhere without edits here. It may be given by
name alone (``method: watershed``) or with parameters (``{name: watershed, min_distance: 40A}``).

Lengths are :data:`~deepict_dask.units.LengthField` values: ``40A``, ``4vx`` or a plain number in
Angstrom.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, SerializeAsAny, WrapValidator, field_serializer, field_validator, model_validator

from deepict_dask.options import Options
from deepict_dask.pick.methods import METHODS, MethodParams, available_methods
from deepict_dask.units import Length, LengthField


def _method_params(value: Any, handler: Any) -> MethodParams:
    """A method name or mapping -> that method's Params (the registry decides, not a fixed union)."""
    if isinstance(value, MethodParams):
        value = value.model_dump(exclude_unset=True) | {"name": value.name}
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise ValueError("give a method name (e.g. cc) or a mapping with 'name' and the method's parameters")
    method = METHODS.get(value["name"])
    if method is None:
        raise ValueError(f"unknown method {value['name']!r}; choose one of {', '.join(available_methods())}")
    return method.params.model_validate(dict(value))


MethodField = Annotated[SerializeAsAny[MethodParams], WrapValidator(_method_params)]
"""A clustering method's parameters, validated by the registered method's own model."""


def _cc() -> MethodParams:
    return _method_params("cc", None)


class ContextRule(Options):
    """Keep or drop particles by their relation to a region mask (DeePiCt's context)."""

    target: str = Field(description="the region: in a run configuration the name of a segmentation target; "
                        "for the API and the CLI a mask file (MRC or Zarr on the map's grid)")
    group: str | None = Field(None, description="group inside the mask's Zarr store")
    mode: Literal["intersection", "contact", "colocalization"] = Field(
        "contact", description="intersection: only foreground inside the mask; contact: clusters touching it; "
        "colocalization: clusters within distance of it")
    distance: LengthField | None = Field(None, description="colocalization distance")
    reach: LengthField | None = Field(None, description="distances up to this are exact "
                                      "(default max(distance, 20 voxels))")
    invert: bool = Field(False, description="keep particles that do NOT satisfy the rule")

    @model_validator(mode="after")
    def _distance_given(self) -> ContextRule:
        if self.mode == "colocalization" and self.distance is None:
            raise ValueError("mode colocalization needs a distance")
        return self


class PickOptions(Options):
    """Threshold, clustering method, size / context / duplicate filters and output points of a pick."""

    threshold: float = Field(0.5, gt=0, le=1, description="probability threshold: voxels >= it are foreground")
    min_size: int | None = Field(None, ge=1, description="smallest cluster kept, voxels (inclusive; default 1)")
    max_size: int | None = Field(None, ge=1, description="largest cluster kept, voxels (inclusive)")
    radius: LengthField | None = Field(None, description="expected particle radius: without min/max size the "
                                       "sizes kept are 0.2x..2x its sphere volume; watershed/peaks seed distance")
    connectivity: Literal[6, 18, 26] = Field(26, description="voxel neighbourhood: faces, +edges, +corners")
    method: MethodField = Field(default_factory=_cc, description="clustering method and its parameters")
    context: ContextRule | None = None
    duplicate_radius: LengthField | tuple[float, float, float] | None = Field(
        None, description="drop the lower-scoring of two picks closer than this ((z, y, x) in A: an ellipsoid)")
    weighted: bool = Field(False, description="probability-weighted centroids")
    centerline: bool = Field(False, description="points along each cluster's skeleton instead of centroids")
    spacing: LengthField = Field(Length(40.0, "A"), description="centreline sampling step")

    @field_validator("context", mode="before")
    @classmethod
    def _one_rule(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) > 1:
                raise ValueError("one context rule per target (make a segmentation target for a combined region)")
            return value[0] if value else None
        return value

    @field_validator("spacing")
    @classmethod
    def _positive_spacing(cls, value: Length) -> Length:
        if not value.value > 0:
            raise ValueError(f"must be positive, got {value}")
        return value

    @field_serializer("duplicate_radius")
    def _radius_as_json(self, value: Any) -> str | list[float] | None:
        return None if value is None else str(value) if isinstance(value, Length) else [float(v) for v in value]

    @field_validator("duplicate_radius")
    @classmethod
    def _positive_radius(cls, value: Any) -> Any:
        values = [value.value] if isinstance(value, Length) else list(value or [])
        if not all(v > 0 for v in values):
            raise ValueError(f"must be positive, got {value}")
        return value

    @model_validator(mode="after")
    def _sizes(self) -> PickOptions:
        if self.min_size and self.max_size and self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) is larger than max_size ({self.max_size})")
        return self
