"""The feed explorer: a one-page UI over the feed API, and the few read-only endpoints it needs.

`/` serves `serving/static/index.html` and `/static/<file>` its script and stylesheet (plain
files, nothing fetched from another host). The JSON endpoints below fill the gaps the feed API
leaves for a person looking at a feed; they read the same `ServingState` as the feed routes:

- `GET /v1/explorer/examples`: example users for the picker and what the model serves.
- `GET /v1/users/{user_id}/history?n=`: the user's current history, newest first (exactly what
  the feed's user tower reads: offline history + live events from the online store).
- `GET /v1/items?ids=`: catalogue entries (media, title, URLs of image/audio files) for ids.
- `GET /v1/items/{item_id}/media/{medium}`: the item's image or audio file, streamed.

Media files come from the `image_uri` / `audio_uri` columns of the run's `items.parquet` when
it has them, else from the dataset the run names (loaded once per model version); relative URIs
resolve against the dataset folder, as in the embed job. TikTok ships precomputed features only,
so its items have no files and the page shows placeholders.

The live catalogue counts like the dataset: an item added through `PUT /v1/items/{id}` (or
`recsys items add`) is described, listed and linked to the raw media kept in the catalogue log
(`feature_store.catalogue_log`); an item taken down is no longer known to the page.
"""
from __future__ import annotations

import asyncio
import logging
import mimetypes
import re
import threading
from pathlib import Path
from typing import Annotated
from urllib.parse import quote, unquote, urlparse

import numpy as np
import polars as pl
from fastapi import APIRouter, Depends, Path as PathParam, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from recsys.artifact import RunArtifact
from recsys.config import get_settings
from serving.api.deps import State
from serving.auth import page_user, require_read, set_page_cookie
from serving.catalogue_sync import sync
from serving.errors import ServingError
from serving.schemas import ErrorBody, MediumName
from serving.retriever import Retriever
from serving.search import search_problem

log = logging.getLogger(__name__)

router = APIRouter(tags=["explorer"])

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
URI_COLUMNS = {"image": "image_uri", "audio": "audio_uri"}
NEW_USER_EXAMPLE = "new-visitor"
MAX_IDS = 200
MAX_IDS_CHARS = 5000  # uvicorn refuses request lines over 64 KiB (plain text); 5000 chars stay under it encoded
_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.(?:html|js|css|svg|png|ico|woff2)$")
_NO_CACHE = {"Cache-Control": "no-cache"}
_READ = [Depends(require_read)]  # the JSON and media routes; the page and its assets stay open


class ExampleUser(BaseModel):
    user_id: str
    n_train: int | None = Field(default=None, description="training interactions of this user")


class ExplorerInfo(BaseModel):
    dataset: str
    model_version: str = Field(description="variant A's model (similar items and search use it)")
    variants: list[str]
    media: list[str] = Field(description="media the catalogue has items of (items added live included)")
    media_files: dict[str, int] = Field(description="medium -> how many items name a file of it (image, audio)")
    search_media: dict[str, str | None] = Field(default_factory=dict, description=(
        "medium -> null when the served model can embed a search query of it, else why it cannot "
        "(the page disables that search input and shows the reason)"))
    users: list[ExampleUser]
    new_user_id: str = Field(description="an id with no history (the feed is the cold-start list); with a page "
                             "session (RECSYS_SERVE_PAGE_KEY), the visitor id the page may post events for")
    default_k: int
    max_k: int


class CatalogueItem(BaseModel):
    item_id: str
    known: bool = Field(description="False when the serving model does not serve the id (unknown, or taken down)")
    media: list[str]
    title: str | None = None
    files: dict[str, str] = Field(default_factory=dict, description="medium -> URL of the item's image/audio file")
    live: bool = Field(False, description="added through the API (PUT /v1/items/{id} or `recsys items add`)")
    metadata: dict | None = Field(None, description="the metadata it was added with (live items)")


class HistoryItem(CatalogueItem):
    ts: int = Field(description="event time (unix seconds; TikTok's offline history uses row order)")


class UserHistoryView(BaseModel):
    user_id: str
    variant: str
    model_version: str
    items: list[HistoryItem] = Field(description="newest first")
    total: int = Field(description="events in the window the feed reads")
    window: int = Field(description="how many recent events make the user's query (RECSYS_ONLINE_HISTORY_CAP)")


class CatalogueItems(BaseModel):
    items: list[CatalogueItem]
    model_version: str


class MediaFiles:
    """Where each item's image/audio file lives, per model version (built on first use).

    Reading the dataset can take seconds, so it happens once per version, in a worker thread,
    and never on import or start-up (a run without files costs nothing until someone asks).
    """

    def __init__(self) -> None:
        self._by_version: dict[str, tuple[dict[str, dict[int, str]], Path]] = {}
        self._lock = threading.Lock()
        self._live: tuple[object, int, dict[str, dict]] | None = None  # (log, operations read, current puts)

    def live_puts(self, retriever: Retriever) -> dict[str, dict]:
        """item_id -> its last put in the catalogue log, for items not taken down since (cached per log length)."""
        catalogue = retriever.catalogue_log
        if catalogue is None:
            return {}
        with self._lock:
            cached = self._live
            if cached is None or cached[0] is not catalogue or cached[1] != len(catalogue):
                cached = self._live = (catalogue, len(catalogue), catalogue.current())
            return cached[2]

    def counts(self, retriever: Retriever) -> dict[str, int]:
        uris, _ = self._catalogue(retriever)
        counts = {medium: len(by_index) for medium, by_index in uris.items()}
        for item_id, op in self.live_puts(retriever).items():
            base = retriever.run.item_index_by_id.get(item_id)
            for medium in URI_COLUMNS:
                if medium in (op.get("files") or {}):
                    counts[medium] += 0 if base is not None and base in uris[medium] else 1
        return counts

    def source(self, retriever: Retriever, index: int, medium: str) -> Path | str | None:
        """A local path, an http(s) URL, or None when the item names no file of `medium`.

        An item put through the API is shown with what it was put with (its files in the log)."""
        op = self.live_puts(retriever).get(str(retriever.item_id(index)))
        if op is not None:
            relative = (op.get("files") or {}).get(medium)
            return retriever.catalogue_log.root / relative if relative else None
        if index >= retriever.n_items:
            return None
        uris, root = self._catalogue(retriever)
        uri = uris.get(medium, {}).get(index)
        if uri is None:
            return None
        if uri.startswith(("http://", "https://")):
            return uri
        if uri.startswith("file://"):
            return Path(unquote(urlparse(uri).path))
        if "://" in uri:
            return None  # s3:// and the like: not servable from here
        path = Path(uri).expanduser()
        return path if path.is_absolute() else root / path

    def urls(self, retriever: Retriever, index: int) -> dict[str, str]:
        """medium -> URL of the media endpoint, for the files that exist (or are remote)."""
        out = {}
        item_id = quote(str(retriever.item_id(index)), safe="")
        for medium in URI_COLUMNS:
            source = self.source(retriever, index, medium)
            if isinstance(source, str) or (isinstance(source, Path) and source.is_file()):
                out[medium] = f"/v1/items/{item_id}/media/{medium}"
        return out

    def _catalogue(self, retriever: Retriever) -> tuple[dict[str, dict[int, str]], Path]:
        with self._lock:
            if retriever.version not in self._by_version:
                self._by_version = {retriever.version: _read_uris(retriever.run), **self._by_version}
                while len(self._by_version) > 4:  # versions switched out long ago
                    self._by_version.pop(next(reversed(self._by_version)))
            return self._by_version[retriever.version]


def _dataset_folder(name: str) -> Path:
    """The folder a run's dataset lives in (a path, or a name under RECSYS_DATA_DIR)."""
    path = Path(name)
    return path if path.is_dir() else get_settings().data_dir / name


def _read_uris(run: RunArtifact) -> tuple[dict[str, dict[int, str]], Path]:
    """(medium -> {item_index: uri}, folder relative URIs resolve against)."""
    root = _dataset_folder(run.dataset)
    table: pl.DataFrame | None = run.items
    if not any(column in table.columns for column in URI_COLUMNS.values()):
        table = None
        try:
            from recsys.data.registry import load_dataset

            dataset = load_dataset(run.dataset)
            table = dataset.items
            if dataset.source_files:
                root = Path(dataset.source_files[0]).parent
        except Exception as err:  # noqa: BLE001 - no dataset here just means no files to show
            log.info("model %s: no media files (dataset %r cannot be read here: %s)", run.model_version, run.dataset,
                     err)
    uris: dict[str, dict[int, str]] = {medium: {} for medium in URI_COLUMNS}
    if table is None:
        return uris, root
    index_of = pl.DataFrame({"item_id": list(run.item_index_by_id), "_index": list(run.item_index_by_id.values())},
                            schema={"item_id": pl.String, "_index": pl.Int64})
    for medium, column in URI_COLUMNS.items():
        if column in table.columns:
            rows = (table.select(pl.col("item_id").cast(pl.String), pl.col(column).cast(pl.String))
                    .drop_nulls(column).join(index_of, on="item_id"))
            uris[medium] = dict(zip(rows["_index"].to_list(), rows[column].to_list()))
    return uris, root


def media_files(request: Request) -> MediaFiles:
    """The app's `MediaFiles` (one per app, created on first use, like the state's other caches)."""
    files = getattr(request.app.state, "explorer_media_files", None)
    if files is None:
        files = request.app.state.explorer_media_files = MediaFiles()
    return files


def describe(retriever: Retriever, files: MediaFiles, item_id: str) -> dict:
    """The catalogue entry of one item id, as the page shows it: trained or added live, unless taken down."""
    index = retriever.lookup(item_id)
    if index is None:
        return {"item_id": item_id, "known": False, "media": []}
    entry = {"item_id": item_id, "known": True, "media": retriever.item_media_of(index),
             "files": files.urls(retriever, index)}
    title = retriever.item_title(index)
    if title is not None:
        entry["title"] = title
    op = files.live_puts(retriever).get(item_id)
    if op is not None:
        entry["live"] = True
        entry["metadata"] = op.get("metadata") or {}
    return entry


def served(state: State, variant: str | None = None) -> Retriever:
    """The variant's model, caught up with the catalogue log (items added or taken down by anyone)."""
    retriever = state.models.get(variant or state.models.variants[0])
    sync(retriever)
    return retriever


def example_users(users: pl.DataFrame, n: int) -> list[dict]:
    """Known users whose history lengths spread from the longest to the shortest (log-spaced)."""
    if "n_train" not in users.columns or users.is_empty():
        return users.head(n).select(pl.col("user_id").cast(pl.String)).to_dicts()
    first = (users.select(pl.col("user_id").cast(pl.String), pl.col("n_train").cast(pl.Int64), "user_index")
             .filter(pl.col("n_train") > 0).sort("user_index").unique("n_train", keep="first").sort("n_train"))
    if first.is_empty():
        return users.head(n).select(pl.col("user_id").cast(pl.String)).to_dicts()
    levels = np.log(first["n_train"].to_numpy().astype(np.float64))
    chosen: list[int] = []
    for target in np.linspace(levels[-1], levels[0], min(n, len(levels))):
        distance = np.abs(levels - target)
        distance[chosen] = np.inf
        chosen.append(int(np.argmin(distance)))
    return first[sorted(chosen, reverse=True)].select("user_id", "n_train").to_dicts()


@router.get("/", include_in_schema=False)
async def page(request: Request) -> FileResponse:
    """The page; with RECSYS_SERVE_PAGE_KEY it also gets a session cookie bound to one new visitor id
    (see `serving.auth`: that user's feed and events only)."""
    response = FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=_NO_CACHE)
    set_page_cookie(request, response)
    return response


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str) -> FileResponse:
    """A web asset directly inside serving/static (no sub-folders, no dot-files, no Python)."""
    path = STATIC_DIR / name
    if not _ASSET_NAME.match(name) or not path.is_file():
        raise ServingError(404, "not_found", f"no static file '{name}'")
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if media_type.startswith("text/") or media_type.endswith("javascript"):
        media_type += "; charset=utf-8"
    return FileResponse(path, media_type=media_type, headers=_NO_CACHE)


@router.get("/v1/explorer/examples", response_model=ExplorerInfo, tags=["explorer"], dependencies=_READ,
            summary="Example users and what the model serves (for the explorer page)")
async def examples(state: State, request: Request, n: Annotated[int, Query(ge=1, le=8)] = 5) -> ExplorerInfo:
    retriever = served(state)
    counts = await asyncio.to_thread(media_files(request).counts, retriever)
    return ExplorerInfo(dataset=retriever.run.dataset, model_version=retriever.version, variants=state.models.variants,
                        media=sorted(retriever.media_now()), media_files=counts,
                        search_media={m: search_problem(retriever, m) for m in ("text", "image", "audio")},
                        users=example_users(retriever.run.users, n),
                        new_user_id=page_user(request) or NEW_USER_EXAMPLE, default_k=state.settings.default_k, max_k=state.settings.max_k)


@router.get("/v1/users/{user_id}/history", response_model=UserHistoryView, tags=["explorer"], dependencies=_READ,
            responses={422: {"model": ErrorBody}, 503: {"model": ErrorBody}},
            summary="The user's current history, newest first (what the feed reads)")
async def user_history(state: State, request: Request,
                       user_id: Annotated[str, PathParam(min_length=1, max_length=200)],
                       n: Annotated[int, Query(ge=1, le=200)] = 20) -> UserHistoryView:
    """Offline history plus live events, from the online store. An unknown user has an empty
    history; 503 when the store cannot be read (the feed then falls back to training vectors)."""
    history = state.feed.history
    pairs = await asyncio.to_thread(history.recent, user_id) if history is not None else None
    if pairs is None:
        raise ServingError(503, "online_store_unavailable", "the online history cannot be read right now (Redis "
                                                            "unreachable or no features materialised)")
    variant = state.experiment.assign(user_id)
    retriever = served(state, variant)
    files = media_files(request)
    newest = pairs[::-1][:n]
    items = await asyncio.to_thread(
        lambda: [{**describe(retriever, files, item), "ts": int(ts)} for item, ts in newest])
    return UserHistoryView(user_id=user_id, variant=variant, model_version=retriever.version, items=items,
                           total=len(pairs), window=history.length)


@router.get("/v1/items", response_model=CatalogueItems, tags=["explorer"], responses={422: {"model": ErrorBody}},
            dependencies=_READ, summary="Catalogue entries (media, title, file URLs) of item ids")
async def catalogue_items(state: State, request: Request, ids: Annotated[str, Query(
        min_length=1, max_length=MAX_IDS_CHARS, description=f"comma-separated item ids (at most {MAX_IDS})",
        examples=["12,7,42"])]) -> CatalogueItems:
    wanted = [i for i in dict.fromkeys(part.strip() for part in ids.split(",")) if i]
    if not wanted or len(wanted) > MAX_IDS:
        raise ServingError(422, "invalid_request", f"ids: give 1..{MAX_IDS} comma-separated item ids, got {len(wanted)}")
    retriever = served(state)
    files = media_files(request)
    items = await asyncio.to_thread(lambda: [describe(retriever, files, item) for item in wanted])
    return CatalogueItems(items=items, model_version=retriever.version)


@router.get("/v1/items/{item_id}/media/{medium}", tags=["explorer"], response_class=FileResponse, dependencies=_READ,
            responses={200: {"content": {"image/*": {}, "audio/*": {}}, "description": "the file"},
                       307: {"description": "the file lives at an http(s) URL"}, 404: {"model": ErrorBody}},
            summary="The item's image or audio file")
async def item_media(state: State, request: Request,
                     item_id: Annotated[str, PathParam(min_length=1, max_length=200)], medium: MediumName) -> Response:
    retriever = served(state)
    index = retriever.lookup(item_id)
    if index is None:
        raise ServingError(404, "unknown_item", f"item '{item_id}' is not in model {retriever.version}'s catalogue "
                                                "(unknown, or taken down)")
    source = None
    if medium in URI_COLUMNS:
        source = await asyncio.to_thread(media_files(request).source, retriever, index, medium)
    if source is None:
        raise ServingError(404, "no_media_file", f"item '{item_id}' has no {medium} file"
                                                 + ("" if medium in URI_COLUMNS else " (text is returned as the title)"))
    if isinstance(source, str):
        return RedirectResponse(source, status_code=307)
    if not source.is_file():
        raise ServingError(404, "media_file_missing", f"item '{item_id}''s {medium} file ({source.name}) is missing "
                                                      "on this server")
    # files in the catalogue log are named by content hash (.bin): say what they are; content-addressed,
    # so they may be cached, but an item's file can change with a new put: revalidate
    media_type = sniff_media_type(source) if source.suffix == ".bin" else None
    return FileResponse(source, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"}
                        if media_type is None else {"Cache-Control": "no-cache"})


_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"), (b"BM", "image/bmp"),
          (b"OggS", "audio/ogg"), (b"fLaC", "audio/flac"), (b"ID3", "audio/mpeg"), (b"\xff\xfb", "audio/mpeg"))


def sniff_media_type(path: Path) -> str:
    """The media type of a stored upload, from its first bytes (uploads are kept without a name)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"RIFF":
        return {b"WAVE": "audio/wav", b"WEBP": "image/webp"}.get(head[8:12], "application/octet-stream")
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), "application/octet-stream")
