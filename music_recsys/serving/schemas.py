"""The API's contract: request and response models, and the error answers each endpoint documents.

Requests are validated strictly (``strict=True``): the schema says boolean, so ``{"exact": 0}`` is a 422,
not false, and ``{"k": "10"}`` is a 422, not 10. Responses are models too, so the OpenAPI document has a
schema for every answer, error answers included (``ERRORS``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

# The shortest entry a history can hold, {"track_id":"x"}, plus the comma between two: a body of n bytes
# holds at most (n - len('{"history":[]}') + 1) // 17 entries (history_limit below).
SHORTEST_ENTRY_BYTES = len('{"track_id":"x"}') + 1
EMPTY_HISTORY_BYTES = len('{"history":[]}')

K_MAX = 1000  # the longest list an endpoint returns
COUNT_MAX = 1_000_000_000  # plays of one track: a bound keeps the fold-in's confidence 1 + alpha * count finite


def history_limit(max_body_bytes: int) -> int:
    """The most history entries a request body of ``max_body_bytes`` can carry.

    The history's ``maxItems`` is derived from the body limit, so the two agree: the body limit is the one
    that binds (a history longer than this cannot fit in an accepted body), and the schema says how many
    entries that is instead of promising a number the server would refuse with a 413 first."""
    return max(1, (max_body_bytes - EMPTY_HISTORY_BYTES + 1) // SHORTEST_ENTRY_BYTES)


def _integral(value: Any) -> Any:
    """JSON Schema's ``integer`` includes 3.0 (a number with no fraction): take it as 3. Everything else
    goes to strict validation as it came, so true, "3" and 3.5 are refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer as JSON Schema means it: strict (no bool, no string), integral floats included.
JsonInt = Annotated[int, BeforeValidator(_integral)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True)


class PlayedTrack(_Strict):
    track_id: str = Field(min_length=1, description="a track id of the model's catalogue", examples=["t03"])
    count: JsonInt = Field(default=1, ge=1, le=COUNT_MAX, description="plays of the track (duplicates are summed)")


class HistoryRequest(_Strict):
    history: list[PlayedTrack] = Field(default_factory=list, description="what the listener played")
    k: JsonInt = Field(default=10, ge=1, le=K_MAX, description="list length")
    exact: bool = Field(default=False, description="exact search instead of the Annoy index")


def history_request_model(max_body_bytes: int) -> type[HistoryRequest]:
    """``HistoryRequest`` whose history is capped at ``history_limit(max_body_bytes)`` entries."""
    limit = history_limit(max_body_bytes)
    return create_model(
        "HistoryRequest",
        __base__=HistoryRequest,
        history=(
            list[PlayedTrack],
            Field(
                default_factory=list,
                max_length=limit,
                description=f"what the listener played: at most {limit:,} entries, the most a request body "
                f"of {max_body_bytes:,} bytes (the server's limit) can carry",
            ),
        ),
    )


class ScoredTrack(BaseModel):
    track_id: str
    score: float = Field(description="inner product (recommendations), cosine (similar) or plays (popularity)")


class UserRecommendations(BaseModel):
    user_id: str
    model_version: str
    exact: bool = Field(description="true when an exact scan answered (asked for, no index, or too few candidates)")
    fallback: Literal["popularity"] | None = Field(description="set when the model had no factor to rank with")
    items: list[ScoredTrack]


class HistoryRecommendations(BaseModel):
    model_version: str
    exact: bool
    items: list[ScoredTrack]
    known_tracks: int = Field(description="distinct history tracks the model knows")
    unknown_tracks: list[str] = Field(description="history tracks the model does not know, in request order")
    fallback: Literal["popularity"] | None


class SimilarTracks(BaseModel):
    track_id: str
    model_version: str
    items: list[ScoredTrack]


class HealthOk(BaseModel):
    status: Literal["ok"]
    model_version: str


class HealthLoading(BaseModel):
    status: Literal["loading"]
    detail: str | None = Field(description="why no model is served yet (null while the first load runs)")


class ModelCard(BaseModel):
    """The bundle's model.json, plus when it was loaded and from where; more keys may follow."""

    model_config = ConfigDict(extra="allow")

    version: str
    run_id: str
    trial_id: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    serving: dict[str, Any] | None = Field(description="the Annoy operating point, null without an index")
    n_users: int
    n_items: int
    files: dict[str, int]
    loaded_at: datetime | None
    path: str


class Detail(BaseModel):
    detail: str = Field(description="what was wrong, naming the object and the value")


def _error(description: str, example: str) -> dict[str, Any]:
    return {
        "model": Detail,
        "description": description,
        "content": {"application/json": {"example": {"detail": example}}},
    }


# The error answers, by status, for the ``responses`` of each route (422 is FastAPI's own ValidationError).
ERRORS: dict[int, dict[str, Any]] = {
    400: _error("the body is not JSON text", "the request body is not valid JSON (Expecting value)"),
    401: _error(
        "a token is configured and the request has no valid `Authorization: Bearer <token>`",
        "this API needs 'Authorization: Bearer <token>' (the server's RECSYS_API_TOKEN or --token-file)",
    ),
    404: _error("unknown user or track", "user 'u999' is not in model 20261130-abc's training data"),
    408: _error(
        "the request body did not arrive in full within the server's body timeout",
        "request body not received within 30 s (music-recsys serve --body-timeout-seconds)",
    ),
    413: _error(
        "the request body is larger than the server's limit",
        "request body over the limit of 1,048,576 bytes (music-recsys serve --max-body-bytes)",
    ),
    503: _error("no model is loaded yet", "no champion in the model registry yet"),
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: ERRORS[status] for status in statuses}
